"""Nothing of the user's is touched: what the project writes, and what it may delete (issue 22, part 3).

The project deletes only what it can prove it wrote: temporary names with its mark, of a process that no longer
runs, owned by this user, and folders only with its marker file inside (cdvd.atomic). cdvd-synth and cdvd-pack
replace only folders they made (one ownership rule); a killed run's leftovers go on the next run; a failed video run
leaves no empty work folder; the built-in training data is never reused for other settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import compose_config, console_script, one_line_error, run_command
from helpers.data import make_tree, tiny_checkpoint
from helpers.processes import dead_pid
from hydra.utils import instantiate

from cdvd import atomic
from cdvd.atomic import remove_stale_temp_files, temp_path
from cdvd.data.io import write_rgb
from cdvd.video import write_test_video

SIZE = (32, 48)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------ stale temp files


def test_a_users_look_alike_temp_files_survive_a_deblur_run_into_their_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        write_rgb(tmp_path / "in" / f"{i:05d}.png", rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out" / "in"  # where cdvd-deblur writes the frames of in/
    out.mkdir(parents=True)
    pid = dead_pid()  # no process has this number: only the name pattern and ownership can keep these
    photo = out / f".holiday.tmp{pid}.jpg"
    photo.write_bytes(b"\xff\xd8 a user's photo")
    folder = out / f".x.tmp{pid}"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("a user's notes")
    (folder / "sub" / "more.txt").write_text("more")
    ours = temp_path(out / "00001.png", pid=pid)  # what a killed cdvd-deblur leaves: it must still go
    ours.write_bytes(b"\x89PNG partial")

    args = [console_script("cdvd-deblur"), f"checkpoint={checkpoint}", "device=cpu", "progress=false"]
    result = run_command([*args, "input=in", "output=out"], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    assert photo.read_bytes() == b"\xff\xd8 a user's photo"
    assert (folder / "notes.txt").read_text() == "a user's notes" and (folder / "sub" / "more.txt").is_file()
    assert not ours.exists()


def test_the_clean_up_removes_only_what_it_can_prove_is_ours(tmp_path: Path) -> None:
    pid = dead_pid()
    ours = temp_path(tmp_path / "a.png", pid=pid)
    ours.write_bytes(b"partial")
    folder = temp_path(tmp_path / "store.lmdb", pid=pid)  # named as ours, but no marker file of ours inside
    folder.mkdir()
    (folder / "data.mdb").write_bytes(b"someone's")
    link = temp_path(tmp_path / "b.png", pid=pid)
    link.symlink_to(tmp_path / "elsewhere.png")
    others = [folder, link]
    if os.geteuid() == 0:  # root can give a file to another user: a file of another user is never ours
        theirs = temp_path(tmp_path / "c.png", pid=pid)
        theirs.write_bytes(b"another user's partial file")
        os.chown(theirs, 54321, 54321)
        others.append(theirs)
    assert remove_stale_temp_files(tmp_path) == [ours]
    assert all(p.is_symlink() or p.exists() for p in others)
    assert (folder / "data.mdb").read_bytes() == b"someone's"


def test_a_temp_file_of_a_process_we_may_not_signal_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's process: os.kill(pid, 0) raises PermissionError. It is running; its file stays."""
    pid = dead_pid()
    theirs = temp_path(tmp_path / "frame.png", pid=pid)
    theirs.write_bytes(b"being written")

    def kill(number: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    assert atomic.pid_alive(pid)
    assert remove_stale_temp_files(tmp_path) == []
    assert theirs.read_bytes() == b"being written"


def test_atomic_writes_sync_the_file_then_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut after the rename must not leave an empty file under the final name: the data is fsynced before
    the rename, the folder (the rename itself) after it. For a frame (write_rgb) and a data set (synthesize)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the synced files")
    from cdvd.data.synthetic import synthesize

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    frame = tmp_path / "frames" / "00000.png"
    write_rgb(frame, np.zeros((8, 8, 3), dtype=np.uint8))
    tmp_name = next(p for p in synced if Path(p).parent == frame.parent and p.endswith(".png"))
    assert tmp_name != str(frame) and synced.index(str(frame.parent)) > synced.index(tmp_name)
    synced.clear()
    synthesize(tmp_path / "syn", n_videos=1, n_frames=3, size=16, sub_frames=3)
    assert str(tmp_path) in synced  # the folder that the data set was renamed into
    frames = [p for p in synced if p.endswith(".png")]
    assert len(frames) >= 6 and synced.index(str(tmp_path)) > max(synced.index(p) for p in frames)


# ------------------------------------------------------------------------------- folders of cdvd-synth/pack

SYNTH = ["n_videos=1", "n_frames=3", "size=32", "sub_frames=3"]


@pytest.mark.slow
@pytest.mark.parametrize("content", ["thesis.tex", "meta.json"])
def test_cdvd_synth_overwrite_never_replaces_a_folder_it_did_not_make(tmp_path: Path, content: str) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / content).write_text("{}" if content == "meta.json" else "\\chapter{One}")
    exe = console_script("cdvd-synth")
    result = run_command([exe, f"output={mine}", "overwrite=true", *SYNTH], cwd=tmp_path, timeout=120)
    line = one_line_error(result, str(mine), only_line=True)
    assert "did not make" in line
    assert sorted(p.name for p in mine.iterdir()) == [content] and hidden(tmp_path) == []
    # a folder cdvd-synth made is replaced with overwrite=true (and refused without it)
    made = tmp_path / "made"
    assert run_command([exe, f"output={made}", *SYNTH], cwd=tmp_path, timeout=120).returncode == 0
    assert one_line_error(
        run_command([exe, f"output={made}", *SYNTH, "seed=3"], cwd=tmp_path, timeout=120), only_line=True
    )
    again = run_command([exe, f"output={made}", *SYNTH, "seed=3", "overwrite=true"], cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert '"seed": 3' in (made / "meta.json").read_text() and hidden(tmp_path) == []
    # a file the user put into a folder cdvd-synth made is not cdvd-synth's: that folder is no longer replaced
    (made / "thesis.tex").write_text("\\chapter{Two}")
    third = run_command([exe, f"output={made}", *SYNTH, "overwrite=true"], cwd=tmp_path, timeout=120)
    assert "did not make" in one_line_error(third, str(made), only_line=True)
    assert (made / "thesis.tex").read_text() == "\\chapter{Two}" and '"seed": 3' in (made / "meta.json").read_text()


def test_cdvd_pack_overwrite_never_replaces_a_folder_it_did_not_make(tmp_path: Path) -> None:
    make_tree(tmp_path / "data", "folder", {"v": 5}, "train", size=SIZE)
    theirs = tmp_path / "theirs.lmdb"  # an LMDB folder of the user's own: data.mdb alone proves nothing
    theirs.mkdir()
    (theirs / "data.mdb").write_bytes(b"\0" * 4096)
    exe = console_script("cdvd-pack")
    result = run_command([exe, "root=data", f"output={theirs}", "overwrite=true"], cwd=tmp_path, timeout=120)
    assert "not made by cdvd-pack" in one_line_error(result, str(theirs), only_line=True)
    assert (theirs / "data.mdb").read_bytes() == b"\0" * 4096


# a run killed (SIGKILL) in the middle of writing, as a power cut or the OOM killer would
_KILLED = """
import os, signal, sys
kind, source, output = sys.argv[1:4]
calls = []

def killed(*args, **kwargs):  # pack: its first transaction (the store is open); synth: the third frame
    calls.append(1)
    if len(calls) > (0 if kind == "pack" else 2):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

if kind == "pack":
    from cdvd.data import packing as module
    original, module._put_all = module._put_all, killed
    module.pack_dataset(source, output)
else:
    from cdvd.data import synthetic as module
    original, module.write_rgb = module.write_rgb, killed
    module.synthesize(output, n_videos=1, n_frames=3, size=32, sub_frames=3)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pack", "synth"])
def test_what_a_killed_run_left_goes_on_the_next_run(tmp_path: Path, kind: str) -> None:
    make_tree(tmp_path / "data", "folder", {"v": 5}, "train", size=SIZE)
    output = tmp_path / ("s.lmdb" if kind == "pack" else "syn")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED, kind, str(tmp_path / "data"), str(output)], capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert hidden(tmp_path), "the killed run left no temporary folder: nothing tested"
    assert not output.exists()
    if kind == "pack":
        args = [console_script("cdvd-pack"), "root=data", f"output={output}"]
    else:
        args = [console_script("cdvd-synth"), f"output={output}", *SYNTH]
    rerun = run_command(args, cwd=tmp_path, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert hidden(tmp_path) == [] and output.is_dir()


# ------------------------------------------------------------------------------------------------ video parts


def test_a_video_run_that_decoded_nothing_leaves_no_work_folder(tmp_path: Path) -> None:
    frames = [np.full((*SIZE, 3), 10 * t, dtype=np.uint8) for t in range(6)]
    data = write_test_video(tmp_path / "clip.mp4", frames, 25).read_bytes()
    end = data.index(b"mdat") + 12  # the index says 6 frames; the frames' data is cut off
    (tmp_path / "cut.mp4").write_bytes(data[:end])
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    args = [console_script("cdvd-deblur"), f"checkpoint={checkpoint}", "device=cpu", "progress=false"]
    result = run_command([*args, "input=cut.mp4", "output=out/sharp.mp4"], cwd=tmp_path, timeout=300)
    one_line_error(result, "cut.mp4", only_line=True)
    assert list((tmp_path / "out").iterdir()) == []  # no output, no .sharp.mp4.parts/


# ---------------------------------------------------------------------------------------- built-in train data


def _synthetic_module(n_frames: int) -> object:
    small = f"{{n_videos: 1, n_frames: {n_frames}, size: 24, sub_frames: 3, seed: %d}}"
    overrides = [
        "+data=synthetic",
        "data.patch_size=16",
        "data.batch_size=1",
        "data.val_frames=all",
        f"++data.synthesize.train={small % 0}",
        f"++data.synthesize.val={small % 1}",
    ]
    module = instantiate(compose_config(None, overrides).data)
    module.setup("fit")
    return module


def test_training_on_the_built_in_data_with_other_settings_uses_data_made_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CDVD_DATA_DIR", str(tmp_path))
    first = _synthetic_module(6)
    root = tmp_path / "synthetic"
    made = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert made == ["train", "val"]
    assert [len(v) for v in first._videos("train")] == [6]
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))

    second = _synthetic_module(7)  # data.synthesize.*.n_frames=7: the data set asked for, not the one there
    assert [len(v) for v in second._videos("train")] == [7] and [len(v) for v in second._videos("val")] == [7]
    assert len(second.val_set) == 7
    # the first data set is untouched (another job may be training on it), and a run asking for it again reads it
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.png") if p.parts[-4] in ("train", "val")) == before
    third = _synthetic_module(6)
    assert third.split_folder("train") == root / "train" and [len(v) for v in third._videos("train")] == [6]
    assert len([p for p in root.iterdir() if not p.name.startswith(".")]) == 4  # train, val and the 7-frame pair


_RACER = """
import json, sys
from cdvd.data.synthetic import synthetic_split
folder = synthetic_split(sys.argv[1], {"n_videos": 1, "n_frames": int(sys.argv[2]), "size": 16, "sub_frames": 3})
print(json.dumps({"folder": str(folder), "n_frames": json.loads((folder / "meta.json").read_text())["n_frames"]}))
"""


@pytest.mark.slow
def test_parallel_jobs_asking_for_other_built_in_data_each_get_their_own(tmp_path: Path) -> None:
    """Sweep jobs started together: one makes each folder (the others wait on its lock), none reads another's."""
    target = tmp_path / "synthetic" / "train"
    jobs = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(target), str(n)], stdout=subprocess.PIPE, text=True)
        for n in (3, 3, 4, 4)
    ]
    found = [json.loads(job.communicate(timeout=300)[0]) for job in jobs]
    assert all(job.returncode == 0 for job in jobs)
    assert [f["n_frames"] for f in found] == [3, 3, 4, 4]
    assert found[0]["folder"] == found[1]["folder"] and found[2]["folder"] == found[3]["folder"]
    assert found[0]["folder"] != found[2]["folder"]
    made = sorted(p.name for p in target.parent.iterdir() if not p.name.startswith(".cdvd") and "lock" not in p.name)
    assert len(made) == 2 and not [p for p in made if "cdvd-tmp" in p]
