"""``cdvd-app``: a local web page to deblur one's own clip (:mod:`cdvd.app.jobs`: the rules; :mod:`cdvd.app.page`: the
Gradio page, imported only by ``cdvd-app``)."""
