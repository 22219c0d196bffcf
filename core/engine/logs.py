"""What a run writes as it goes, by rank 0 only: ``metrics.csv`` (one row per epoch) and TensorBoard scalars
(:class:`RunLog`), and ``train.log``, the lines the terminal showed (:class:`TrainLog`, :func:`epoch_line`)."""

from __future__ import annotations

import csv
from pathlib import Path


class RunLog:
    """``metrics.csv`` (one row per epoch) and TensorBoard scalars in ``output_dir``."""

    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled, self.path = enabled, Path(output_dir) / "metrics.csv"
        self.tensorboard, self.tb_dir, self._tb = enabled and tensorboard, Path(output_dir) / "tb", None

    @property
    def tb(self):
        """The TensorBoard writer, created at the first scalar (a failed start leaves no empty event file);
        None when TensorBoard is off or on other ranks."""
        if self.tensorboard and self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.tb_dir))
        return self._tb

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.tensorboard:
            self.tb.add_scalar(name, value, step)

    def epoch(self, row: dict) -> None:
        """Append the epoch's row; a row with new columns (an evaluation epoch after training-only ones)
        rewrites the file with the union of the columns, earlier rows left empty there."""
        if not self.enabled:
            return
        rows = self._rows()
        columns = list(rows[0]) if rows else []
        if not rows or set(row) - set(columns):
            columns += [k for k in row if k not in columns]
            self._write(columns, [*rows, row])
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=columns).writerow(row)
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                self.scalar(f"epoch/{k}", v, row["epoch"])

    def _rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, columns: list[str], rows: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (written by a run that died before its checkpoint)."""
        rows = self._rows() if self.enabled else []
        if rows:
            self._write(list(rows[0]), [r for r in rows if int(r["epoch"]) <= epoch])

    def last_row(self) -> dict:
        """The last epoch's metrics (numbers as floats; columns it left empty omitted), or {} if none."""
        rows = self._rows()
        out = {}
        for k, v in (rows[-1].items() if rows else ()):
            if v != "":
                try:
                    out[k] = int(v) if k == "epoch" else float(v)
                except (TypeError, ValueError):
                    out[k] = v
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class TrainLog:
    """Rank 0's per-epoch lines, printed and appended to ``train.log``."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.path, self.enabled = out / "train.log", enabled

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        print(text, flush=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(text + "\n")


def epoch_line(row: dict, epochs: int, counter: str = "epoch") -> str:
    """``epoch 3/15: train_loss 1.234 | val_top1 52.30 | img/s 12,800 | 4.1 s`` from a metrics row."""
    parts = [f"{counter} {row[counter]}/{epochs}:"]
    for key, value in row.items():
        if key in (counter, "seconds", "img_s", "lr", "skipped") or not isinstance(value, (int, float)):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    if "img_s" in row:
        parts.append(f"img/s {row['img_s']:,.0f}")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.1f} s")
    return " | ".join([parts[0] + " " + parts[1]] + parts[2:]) if len(parts) > 1 else parts[0]
