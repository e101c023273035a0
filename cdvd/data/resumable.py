"""A training DataLoader that a checkpoint taken in the middle of an epoch resumes batch for batch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` with Lightning's ``state_dict``/``load_state_dict`` interface.

    Everything random in an epoch of our training data (the shuffle, the worker seeds, the crops and flips read in
    the main process) is drawn from the random state the epoch's iteration starts with. A checkpoint stores that state
    and the number of batches trained on; a resume puts the state back, draws those batches again (paying their
    loading time) and drops them, then goes on with the very batches the uninterrupted run trained on.

    ``progress`` must return the batches of the current epoch training has taken (Lightning fetches one ahead, so the
    loader's own count is one too many); :class:`cdvd.training.callbacks.RNGStateCallback` sets it from the trainer.
    Without it the checkpoint stores nothing and a resume starts the epoch's data over (Lightning's default).
    """

    progress: Callable[[], int] | None = None
    _epoch_state: dict[str, Any] | None = None
    _resume: dict[str, Any] | None = None

    def _generators(self) -> dict[str, torch.Generator | None]:
        # TrainClipDataset draws its items from a generator of its own when read in this process with a seed
        dataset_generator = getattr(self.dataset, "_generator", None)
        if not isinstance(dataset_generator, torch.Generator):
            dataset_generator = None
        return {"generator": self.generator, "dataset_generator": dataset_generator}

    def _random_state(self) -> dict[str, Any]:
        states = {key: None if gen is None else gen.get_state() for key, gen in self._generators().items()}
        return {"torch": torch.get_rng_state(), **states}

    def _set_random_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        for key, generator in self._generators().items():
            if generator is not None and state.get(key) is not None:
                generator.set_state(state[key])

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        if resume is not None:
            self._set_random_state(resume["random_state"])
        self._epoch_state = self._random_state()
        iterator = super().__iter__()
        if resume is not None:
            for _ in range(resume["batches"]):
                next(iterator)
            logger.info("resumed the epoch after its first %d batches, drawn again as they were", resume["batches"])
        return iterator

    def state_dict(self) -> dict[str, Any]:
        """Where the current epoch stands: ``{"random_state": ..., "batches": n, "length": len(self)}`` or ``{}``."""
        if self.progress is None or self._epoch_state is None:
            return {}
        return {"random_state": self._epoch_state, "batches": int(self.progress()), "length": len(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the epoch that ``state_dict`` describes at its next iteration (an epoch's end: nothing to do)."""
        batches = state_dict.get("batches", 0)
        if not 0 < batches < state_dict.get("length", 0):  # also an empty state: an epoch's end
            return
        if state_dict["length"] != len(self):
            logger.warning(
                "the checkpoint's epoch had %d batches, this one has %d: the data of the resumed epoch differs",
                state_dict["length"],
                len(self),
            )
            return
        self._resume = {"random_state": state_dict["random_state"], "batches": batches}
