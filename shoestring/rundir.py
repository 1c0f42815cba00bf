"""rundir.py: a training run owns its folder.

The rules (README "Training runs and their folders"):
- The default folder is a fresh `runs/<YYYYmmdd-HHMMSS>`, created exclusively: runs started in
  the same second get `-2`, `-3`, ... and never share a folder.
- While a run trains, it holds a lock on `<out_dir>/.shoestring.lock` (an OS file lock, so a run
  killed even by SIGKILL leaves no stale lock). A second run aimed at a folder whose lock is held
  is refused with one line naming the live run's pid.
- A new run (no checkpoint) is refused in a folder that already holds a run's checkpoints or
  metrics (`last.json`, `best.json`, `metrics.jsonl`): it would replace best.json with a worse
  model and mix two runs' metrics. Resume that run with --checkpoint, or choose another folder.
- A resumed run may write into a folder only when the folder holds no checkpoint of another run
  (the run id in the checkpoint tells) and its last.json is not newer than the checkpoint being
  resumed (resuming from best.json into its own folder would otherwise rewind last.json): then
  resume from last.json, or give another out_dir to branch off.
"""
import errno
import json
import os
import time

from .errors import ShoestringError
from .safeio import os_error_hint, os_error_text

LOCK_NAME = ".shoestring.lock"
RUN_FILES = ("last.json", "best.json", "metrics.jsonl")


def fresh_run_dir(parent="runs"):
    """Create and return a new folder parent/<timestamp>[-n] that no other run can get."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ShoestringError("cannot create the folder %s for the run: %s (%s)"
                              % (parent, os_error_text(exc), os_error_hint(exc, "--out-dir")),
                              setting="out_dir") from None
    for n in range(1, 10000):
        path = os.path.join(parent, stamp if n == 1 else "%s-%d" % (stamp, n))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise ShoestringError("cannot create out_dir %s: %s (%s)"
                                  % (path, os_error_text(exc), os_error_hint(exc, "out_dir")),
                                  setting="out_dir") from None
    raise ShoestringError("runs/ holds 10,000 runs started in the same second (choose out_dir)",
                          setting="out_dir")


class RunLock:
    """An exclusive OS lock on <folder>/.shoestring.lock, held until release()."""

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd = None

    def acquire(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ShoestringError("cannot lock out_dir %s: %s (%s)"
                                  % (self.folder, os_error_text(exc),
                                     os_error_hint(exc, "another out_dir")),
                                  setting="out_dir") from None
        if not _try_lock(fd):
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(fd)
            raise ShoestringError(
                "out_dir %s is in use by another training run (pid %s) (wait for it to finish, "
                "or choose another out_dir)" % (self.folder, holder[:20]), setting="out_dir")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, ("%d\n" % os.getpid()).encode("ascii"), 0)
        except OSError:
            pass                    # the pid is only for the message; the lock is what counts
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            try:
                os.close(self.fd)   # closing drops the lock
            finally:
                self.fd = None


def _try_lock(fd):
    try:
        import fcntl
    except ImportError:             # Windows
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def peek_training(path):
    """(step, run_id) of a checkpoint file from its small "training" line, without decoding its
    tensors; (None, None) when unreadable."""
    try:
        with open(path, "rb") as f:
            for _ in range(16):               # the header lines; "training" is the 8th
                line = f.readline(1 << 24)
                if not line.endswith(b"\n"):
                    break
                if line.startswith(b'"training":'):
                    try:
                        tr = json.loads(line[len(b'"training":'):].rstrip(b",\r\n"))
                        return tr.get("step"), tr.get("run_id")
                    except ValueError:
                        break
    except OSError:
        pass
    return None, None


def check_folder(folder, run_id, resume_step):
    """Refuse a folder holding another run, or (resuming) a newer last.json of this run.
    resume_step is None for a new run."""
    present = [n for n in RUN_FILES if os.path.lexists(os.path.join(folder, n))]
    if not present:
        return
    if resume_step is None:
        raise ShoestringError(
            "out_dir %s already holds a training run (%s); a new run there would replace them "
            "(resume it with --checkpoint %s, or choose another out_dir)"
            % (folder, ", ".join(present), os.path.join(folder, "last.json")), setting="out_dir")
    for name in ("last.json", "best.json"):
        path = os.path.join(folder, name)
        if not os.path.lexists(path):
            continue
        step, other = peek_training(path)
        if other is not None and run_id is not None and other != run_id:
            raise ShoestringError(
                "out_dir %s holds checkpoints of another training run (%s); resuming there would "
                "replace them (choose another out_dir)" % (folder, name), setting="out_dir")
        if name == "last.json" and isinstance(step, int) and step > resume_step:
            raise ShoestringError(
                "%s in out_dir %s is at step %d, newer than the checkpoint being resumed (step %d); "
                "continuing there would rewind it (resume from %s to continue the run, or choose "
                "another out_dir to branch off at step %d)"
                % (name, folder, step, resume_step, path, resume_step), setting="out_dir")
