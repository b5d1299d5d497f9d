"""One training epoch, one validation pass, and the device settings they share."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from geopsp.core.classes import IGNORE
from geopsp.core.interrupts import raise_if_interrupted
from geopsp.core.precision import cpu_has_bf16
from geopsp.core.progress import bar
from geopsp.core.runtime import Runtime, all_sum
from geopsp.evaluate.metrics import scores
from geopsp.train.losses import total_loss


@dataclass
class Accel:
    """How tensors are placed and autocast on the device."""

    device: torch.device
    amp: bool = False
    amp_dtype: torch.dtype = torch.float32
    channels_last: bool = False

    @classmethod
    def for_device(cls, device: torch.device, amp: bool | None) -> Accel:
        """CUDA: AMP on by default (bfloat16 where the GPU supports it, else float16 with a
        GradScaler) and channels_last. CPU: bfloat16 autocast by default where the CPU has
        bfloat16 instructions (:func:`cpu_has_bf16`), else float32; ``amp`` True or False
        decides on any CPU. The CPU keeps its weights in the default layout (see
        :func:`train_step` for the batches).

        With AMX, a training step of the CPU default network took 1.05x (64 px chips) to 2.6x
        (256 px) less time in bfloat16 than in float32 (docs/performance.md).
        """
        if device.type == "cpu":
            use = cpu_has_bf16() if amp is None else bool(amp)
            return cls(device, use, torch.bfloat16 if use else torch.float32)
        if device.type != "cuda":
            return cls(device)
        use = True if amp is None else bool(amp)
        bf16 = torch.cuda.is_bf16_supported()
        dtype = (torch.bfloat16 if bf16 else torch.float16) if use else torch.float32
        return cls(device, use, dtype, channels_last=True)

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def scaler(self) -> torch.amp.GradScaler:
        # Loss scaling only matters for float16: bfloat16 has float32's exponent range.
        return torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nb = self.device.type == "cuda"  # pinned host memory -> asynchronous copies
        x = x.to(self.device, non_blocking=nb)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=nb).long()


# Batches measured faster in channels_last from these chip sizes on (bench/train_step.py):
CPU_CHANNELS_LAST_PIXELS = 256 * 256  # float32
CPU_BF16_CHANNELS_LAST_PIXELS = 96 * 96  # bfloat16 (64 px chips: 1.3x slower than NCHW)


def train_step(model, optimizer, scaler, x, y, criterion, weight, accel: Accel, aux_weight: float):
    """Forward, loss, backward and optimizer step; returns the detached loss.

    On a CPU, chips of ``CPU_CHANNELS_LAST_PIXELS`` or more in float32
    (``CPU_BF16_CHANNELS_LAST_PIXELS`` in bfloat16) enter the network in ``channels_last``
    layout: oneDNN then runs the convolutions' forward and backward passes without reordering
    every activation and gradient to its blocked layout and back (default PSPNet, 256 px
    chips in float32: 0.74 -> 0.85 of the measured matmul/convolution ceiling; smaller chips
    are faster in the default layout, see docs/performance.md). The weights keep their layout,
    so checkpoints and model files are unchanged.
    """
    least = CPU_BF16_CHANNELS_LAST_PIXELS if accel.amp else CPU_CHANNELS_LAST_PIXELS
    if x.device.type == "cpu" and x.ndim == 4 and x.shape[-2] * x.shape[-1] >= least:
        x = x.contiguous(memory_format=torch.channels_last)
    with accel.autocast():
        out = model(x)
    loss = total_loss(out, y, criterion, weight, aux_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def run_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    scaler,
    criterion,
    weight,
    accel,
    aux_weight,
    rt,
    desc,
    progress,
    average=None,
) -> dict:
    """Train one epoch; returns the mean loss over all ranks, the chips seen and the time.

    ``average`` (a :class:`~geopsp.train.averaging.WeightAverage`) is updated after each step.
    """
    model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=accel.device)
    count = torch.zeros((), dtype=torch.float64, device=accel.device)
    with bar(len(loader), desc, enabled=progress and rt.is_main, unit="batch") as pb:
        for i, (x, y) in enumerate(loader):
            x, y = accel.to_device(x, y)
            loss = train_step(model, optimizer, scaler, x, y, criterion, weight, accel, aux_weight)
            scheduler.step()
            if average is not None:
                average.update()
            loss_sum += loss.double() * len(x)
            count += len(x)
            pb.update(1)
            if i % 10 == 9:  # reading the loss synchronises the GPU: only now and then
                pb.set_postfix(loss=f"{(loss_sum / count).item():.4f}")
            raise_if_interrupted()  # a Ctrl-C swallowed while workers started
    stats = all_sum(torch.stack([loss_sum, count]), rt)
    loss_mean = float(stats[0] / stats[1]) if stats[1] > 0 else float("nan")
    if not np.isfinite(loss_mean):
        from geopsp.core.errors import GeopspError

        raise GeopspError("the training loss became NaN or infinite; use a smaller --lr")
    return {"train_loss": loss_mean, "chips": int(stats[1]), "seconds": time.perf_counter() - t0}


def validate(model, loader, criterion, num_classes: int, accel: Accel, rt: Runtime) -> dict:
    """Loss and metrics from one confusion matrix over the whole validation set (all ranks)."""
    model.eval()
    k = num_classes
    cm = torch.zeros(k * k, dtype=torch.int64, device=accel.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=accel.device)
    n = torch.zeros((), dtype=torch.float64, device=accel.device)
    with torch.inference_mode():
        for x, y in loader:
            x, y = accel.to_device(x, y)
            with accel.autocast():
                logits = model(x)
            valid = y != IGNORE
            nv = valid.sum()
            if nv == 0:
                continue
            loss_sum += criterion(logits, y).double() * nv
            n += nv
            pred = logits.argmax(1)
            cm += torch.bincount(y[valid] * k + pred[valid], minlength=k * k)
    all_sum(cm, rt)
    stats = all_sum(torch.stack([loss_sum, n]), rt)
    out = scores(cm.cpu().numpy().reshape(k, k))
    out["val_loss"] = float(stats[0] / stats[1]) if stats[1] > 0 else float("nan")
    out["matrix"] = cm.cpu().numpy().reshape(k, k)
    return out


def predict_chips(model, dataset, indexes, accel: Accel) -> tuple[list, list, list]:
    """Images, reference labels and predictions (channel indexes) of a few chips."""
    model.eval()
    imgs, refs, preds = [], [], []
    with torch.inference_mode():
        for i in indexes:
            x, y = dataset[i]
            xb, _ = accel.to_device(x[None], y[None])
            with accel.autocast():
                p = model(xb).argmax(1)[0].cpu().numpy().astype(np.uint8)
            imgs.append(x.numpy())
            refs.append(y.numpy())
            preds.append(p)
    return imgs, refs, preds
