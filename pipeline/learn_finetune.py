"""Fine-tuning the sentence model on the researchers' own codes ([learn] encoder).

A direct fine-tune: the sentence model's pooled, normalised embedding feeds a linear head over
the model's classes (a softmax where coders give one code per unit, independent sigmoids where
they give sets), and both are trained for one pass over a class-balanced draw of the coded units
(at most [learn] finetune_samples draws: past that many coded units the cost stops growing). A role-aware
framework masks the classes a unit's speaker role cannot get, as learn's own models do. learn then
fits its usual models (context features, role-aware heads) on embeddings from the tuned encoder.

Whether it pays is measured, not assumed: the coded interviews are split once, grouped and seeded
([learn] finetune_holdout of them held out); the encoder is tuned on the rest, learn's model is
fitted on the rest with the tuned and with the frozen features, and both are scored on the
held-out interviews. "auto" keeps the tuned encoder only when it scores higher there, and only
where it fits the time budget (a GPU, or at most [learn] finetune_max_units coded units on CPU).
Kept, the encoder is tuned once more, the same way, on every coded unit (the held-out interviews
included), and that encoder makes the final features: the comparison chooses the method, the
final model uses all the codes.

Reproducible: seeded draws, dropout and head initialisation; on CPU the same thread count gives
the same weights, so a rerun gives identical tables.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline.embed import Encoder, compute_threads
from pipeline.settings import EmbedSettings


class TunedEncoder(Encoder):
    """An Encoder whose model is a fine-tuned copy of another's; never cached (its vectors belong to
    this learn run only)."""

    def __init__(self, base: Encoder, model, tag: str):
        super().__init__(base.spec, base.device, None)
        self._model = model
        self.model_id = f"{base.model_id}+tuned-{tag}"
        self.base_model_id = base.model_id

    def with_cache(self, embed: EmbedSettings) -> "TunedEncoder":
        self.cache = None
        return self


def load_tuned_encoder(path, base: Encoder, model_id: str) -> TunedEncoder:
    """The fine-tuned encoder a learn run saved (learn_model/encoder), over the base it was tuned from."""
    from sentence_transformers import SentenceTransformer

    tuned = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return TunedEncoder(base, tuned, model_id.rsplit("-", 1)[-1])


@dataclass(frozen=True)
class TuneReport:
    units: int  # coded units the encoder was tuned on
    draws: int  # training examples drawn (one pass)
    seconds: float
    device: str
    final_loss: float  # mean loss over the last tenth of the steps


def class_balanced_weights(targets: np.ndarray) -> np.ndarray:
    """(n,) sampling weight of each unit: the mean inverse frequency of its classes, so every class
    is drawn about equally often (a unit with several codes counts for each)."""
    freq = targets.sum(axis=0)
    inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
    w = (targets * inv[None, :]).sum(axis=1) / np.maximum(targets.sum(axis=1), 1e-12)
    return w / w.sum()


def tune_encoder(
    base: Encoder,
    texts: list[str],
    targets: np.ndarray,
    multi_code: bool,
    allowed: np.ndarray | None,
    draws: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress=None,
) -> tuple[TunedEncoder, TuneReport]:
    """Fine-tune a copy of base's sentence model on (texts, targets).

    targets: (n, classes) soft labels (rows sum to 1) for one code per unit, or 0/1 code sets with
    multi_code. allowed: (n, classes) classes each unit's speaker role may get, or None."""
    import time

    import torch

    started = time.perf_counter()
    torch.set_num_threads(compute_threads())
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = copy.deepcopy(base.model)
    device = model.device
    dim = base.dim
    head = torch.nn.Linear(dim, targets.shape[1]).to(device)
    # the pretrained encoder moves gently, the fresh head fast
    opt = torch.optim.AdamW(
        [{"params": model.parameters(), "lr": learning_rate}, {"params": head.parameters(), "lr": learning_rate * 50}],
        weight_decay=0.01,
    )
    order = rng.choice(len(texts), size=draws, replace=True, p=class_balanced_weights(targets))
    y_all = torch.tensor(targets, dtype=torch.float32)
    mask_all = None if allowed is None else torch.tensor(allowed, dtype=torch.bool)
    model.train()
    losses = []
    steps = int(np.ceil(draws / batch_size))
    for step in range(steps):
        rows = order[step * batch_size : (step + 1) * batch_size]
        features = model.preprocess([texts[i] for i in rows])
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        logits = head(model(features)["sentence_embedding"])
        y = y_all[rows].to(device)
        if multi_code:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        else:
            if mask_all is not None:
                logits = logits.masked_fill(~mask_all[rows].to(device), -1e4)
            loss = -(y * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
        if progress and (step % 10 == 0 or step == steps - 1):
            progress("learn fine-tune", step + 1, steps)
    model.eval()
    digest = hashlib.blake2b(digest_size=6)
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    digest.update(targets.round(6).tobytes() + repr((multi_code, draws, batch_size, learning_rate, seed)).encode())
    tag = digest.hexdigest()
    tail = losses[-max(1, len(losses) // 10) :]
    report = TuneReport(
        len(texts),
        int(draws),
        round(time.perf_counter() - started, 1),
        str(device),
        round(float(np.mean(tail)), 4) if tail else float("nan"),
    )
    return TunedEncoder(base, model, tag), report


def has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())
