"""tools/cli_common.py: a DataLoader worker's error is one line, and an interrupt message is the last thing
printed (the progress bar is closed first, not cleared after it at exit)."""

import gc
import sys
import types
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tools.cli_common import close_progress, fit_and_report, one_line, one_line_errors, worker_message


class Unreadable(Dataset):
    def __init__(self, exc):
        self.exc = exc

    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise self.exc


def worker_error(exc) -> BaseException:
    """What the main process receives when a worker's ``__getitem__`` raises ``exc`` (the worker shut down and
    the traceback dropped, so that nothing waits on it later)."""
    batches = iter(DataLoader(Unreadable(exc), batch_size=2, num_workers=1))
    try:
        next(batches)
    except BaseException as err:  # noqa: BLE001 - whatever torch re-raises
        caught = err
    else:
        pytest.fail("the worker raised nothing")
    finally:
        batches._shutdown_workers()
    caught.__traceback__ = None
    return caught


def test_worker_errors_come_back_as_their_one_line_message():
    err = worker_error(OSError("cannot read image x/9.jpg: cannot identify image file 'x/9.jpg'"))
    assert isinstance(err, OSError) and "Traceback" in str(err)  # torch rebuilt it from the whole traceback
    assert one_line(err) == "cannot read image x/9.jpg: cannot identify image file 'x/9.jpg'"
    assert one_line(worker_error(KeyError("label"))) == "'label'"
    assert worker_message("an ordinary message") is None and one_line(ValueError("plain")) == "plain"


def test_classification_unreadable_image_keeps_its_type_and_message_across_workers(tmp_path):
    from classification.data import UnreadableImage

    err = worker_error(UnreadableImage(str(tmp_path / "9.png"), OSError("cannot identify image file")))
    assert type(err) is UnreadableImage  # buildable from one string: torch re-raises the type, not RuntimeError
    assert str(err) == (f"cannot read image {tmp_path / '9.png'}: cannot identify image file "
                        "(data.skip_corrupt=true skips unreadable images)")


def test_one_line_errors_prints_one_line_for_a_worker_error(capsys):
    err = worker_error(OSError("cannot read image x/9.jpg: broken"))

    def run():
        raise err
    assert one_line_errors(run) == 2
    printed = capsys.readouterr().err
    assert printed.count("\n") == 1 and printed.startswith("error: cannot read image x/9.jpg: broken")


def fake_trainer(raises, out: Path):
    trainer = types.SimpleNamespace(out=out, epoch=0, step=3, running_epoch=1, info=types.SimpleNamespace(is_main=True))
    trainer.bar = tqdm(total=10, desc="epoch 1/5", leave=False, file=sys.stderr)
    trainer.bar.update(3)

    def fit(resume=False, overwrite=False):
        raise raises
    trainer.fit = fit
    return trainer


def test_the_interrupt_message_is_the_last_thing_printed(tmp_path, capsys):
    trainer = fake_trainer(KeyboardInterrupt(), tmp_path)
    code = fit_and_report(trainer, types.SimpleNamespace(resume=False, overwrite=False))
    bar = trainer.bar
    del trainer, bar
    gc.collect()  # a bar still open would now clear its line again, after the message
    err = capsys.readouterr().err
    assert code == 130
    assert err.endswith("interrupted at epoch 1 step 3; last checkpoint none yet; continue with --resume\n"), repr(err)
    before = err[: err.index("interrupted")]
    assert before.endswith("\r") and before.rsplit("\r", 2)[-2].strip() == ""  # the bar's line was wiped first


def test_an_error_closes_the_bar_before_it_is_reported(tmp_path, capsys):
    trainer = fake_trainer(OSError("cannot read image x/9.jpg: broken"), tmp_path)
    assert one_line_errors(lambda: fit_and_report(trainer, types.SimpleNamespace(resume=False, overwrite=False))) == 2
    assert trainer.bar.disable  # closed
    close_progress(trainer)  # twice is fine
    err = capsys.readouterr().err
    assert err.endswith("error: cannot read image x/9.jpg: broken (--debug or KEEPAUG_DEBUG=1 shows the traceback)\n")
