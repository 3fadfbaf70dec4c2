"""The loss terms of the fine-tuning strategies, as pure functions of tensors.

Each function cites the equation it implements; where a paper leaves a detail open (the
reduction, which side of a distillation pair receives gradients) the docstring says what is
done here. Teacher logits and teacher-head feature maps are detached: a teacher is a
reference, not pulled toward its student. The one exception is the aligning module of
:func:`feature_kl`, which exists to be learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from exitsearch.heads import UncertaintyPredictor

__all__ = [
    "feature_kl",
    "feature_mse",
    "gram",
    "gram_mse",
    "inplace_distillation",
    "kd_loss",
    "uncertainty_loss",
]


def inplace_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MEViT's in-place distillation (eq. 5): ``f_n ln(f_n / f_i)``.

    The Kullback-Leibler divergence from the final classifier's softmax ``f_n`` (teacher) to an
    early exit's softmax ``f_i`` (student), summed over classes and averaged over the batch.

    Args:
        student: (B, C) logits of the early exit.
        teacher: (B, C) logits of the final classifier (detached here).
    """
    log_s = F.log_softmax(student.float(), dim=-1)
    log_t = F.log_softmax(teacher.detach().float(), dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    gamma: float,
    temperature: float,
) -> torch.Tensor:
    """Vanilla knowledge distillation (LGViT, eq. 14).

    ``(1 - gamma) CE(y_s, y) + gamma T^2 KL(softmax(y_t / T) || softmax(y_s / T))``

    Eq. 14 as printed has no ``T^2``; Hinton et al. multiply the softened term by ``T^2`` so
    that its gradients keep their size when ``T`` changes, and LGViT's released code does the
    same, so this does too. The paper leaves the KL term's reduction open; LGViT's released code
    sums it over the batch and the classes and divides by their product, ``B·C``, and so does
    this (the cross-entropy is averaged over the batch, as there).
    """
    ce = F.cross_entropy(student.float(), labels)
    t = float(temperature)
    soft = inplace_distillation(student.float() / t, teacher.float() / t) / student.shape[-1]
    return (1.0 - gamma) * ce + gamma * t * t * soft


def feature_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """One term of LGViT's heterogeneous distillation (LGViT, eq. 9): ``L_KL(F_m, Align(F_L))``.

    Feature maps (B, N, D) become distributions over the D channels of each token (softmax
    along D, as LGViT's released code does); the divergence from the aligned final-layer map
    (teacher) to the head's map is summed over channels and tokens and averaged over samples,
    the ``batchmean`` reduction of LGViT's released code (so the term grows with the number of
    tokens N, and ``alpha`` weighs it as it does there). The teacher is *not* detached: its
    aligning module is learned through this loss (``F_L`` itself comes from the frozen
    backbone).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"feature maps differ in shape: {tuple(student.shape)} vs {tuple(teacher.shape)}"
        )
    log_s = F.log_softmax(student.float(), dim=-1)
    log_t = F.log_softmax(teacher.float(), dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum((-2, -1)).mean()


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """One term of LGViT's homogeneous distillation between LPHs (LGViT, eq. 10):
    ``L_MSE(F_m, F_{M/2})``, the mean squared difference of two (B, N, D) feature maps; the
    last LPH's map is the teacher (detached)."""
    return F.mse_loss(student.float(), teacher.detach().float())


def gram(fmap: torch.Tensor) -> torch.Tensor:
    """``F^T F`` of each sample's (N', D) feature map: (B, D, D) (LGViT, eq. 11)."""
    f = fmap.float()
    return f.transpose(1, 2) @ f


def gram_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """One term of LGViT's homogeneous distillation between GAHs (LGViT, eq. 11):
    ``L_MSE(F_m^T F_m, F_M^T F_M)``. The maps may hold different numbers of tokens (each GAH
    pools with its own window); their D x D Gram matrices compare. The last GAH's map is the
    teacher (detached). Not normalised by the token count, as eq. 11 is written."""
    return F.mse_loss(gram(student), gram(teacher.detach()))


def uncertainty_loss(
    predictor: UncertaintyPredictor, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """MEViT's uncertainty loss (eqs. 2-4): ``||u_i - tanh(|f_i(h_i) - y|)||^2``.

    The predictor reads the head's logits detached, as classifier-wise head training does
    (:mod:`exitsearch.training.head_training`): the predictor learns to judge the head, the head is not
    pushed to make its own errors easier to predict.
    """
    u = predictor(logits.detach().float())
    return F.mse_loss(u, UncertaintyPredictor.target(logits, labels))
