"""Patch pausing in a ViT (PAUMER §2): pause low-entropy patches, reassemble later.

After block ``l`` of a pause configuration, the auxiliary decoder ``D_A`` predicts a label for
every patch token still being processed, eq. 4 gives each token the entropy of that prediction,
and the ``k`` tokens of lowest entropy (or ``k`` random ones, the paper's random-pausing
baseline) stop: later blocks run on the remaining tokens only, and the paused tokens are kept,
with their original indices, as they were when paused. The patch assembler (paper App. A)
scatters every token back into its original place, both before the final norm and decoder and
whenever an exit head needs the hidden state at a location: heads always see all tokens.
Prefix tokens (class, distillation, registers) are never paused.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.core.pause import PauseConfig
from exitsearch.errors import ConfigError

__all__ = [
    "AuxDecoder",
    "PauseMode",
    "PausedStates",
    "PausedTokens",
    "PausingViT",
    "assemble",
    "token_entropy",
    "uses_aux_decoder",
]


class PauseMode(str, enum.Enum):
    """How the tokens to pause are chosen."""

    ENTROPY = "entropy"  # PAUMER: the lowest-entropy tokens of the auxiliary decoder (eq. 4)
    RANDOM = "random"  # the paper's random-pausing baseline (RP)

    @classmethod
    def parse(cls, value: str | PauseMode) -> PauseMode:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown pause mode {value!r}; known: {known}") from None


class AuxDecoder(nn.Module):
    """PAUMER's auxiliary decoder ``D_A``: a per-token linear classifier (the paper's 1x1 conv).

    A LayerNorm comes first because one decoder serves every pause layer (3..L-1) and the
    residual stream of a pre-norm ViT grows with depth; it is per token, so the decoder stays a
    1x1 operation. Input ``(B, n, D)`` patch tokens, output ``(B, n, C)`` logits.
    """

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.fc = nn.Linear(embed_dim, num_classes)

    @property
    def num_classes(self) -> int:
        return int(self.fc.out_features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(tokens))


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``H[softmax(D_A(X_l))]`` per token (nats), in float32, over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass(frozen=True)
class PausedTokens:
    """Tokens paused after block ``layer``: ``index`` (B, k) original patch indices (0-based,
    prefix excluded) and ``tokens`` (B, k, D), their representation when paused."""

    layer: int
    index: torch.Tensor
    tokens: torch.Tensor


@dataclass
class PausedStates:
    """What :meth:`PausingViT.forward_states` returns.

    Attributes:
        states: assembled hidden state (all tokens, original order) after each requested
            location.
        final: assembled hidden state after the last block: the input of the final norm/decoder.
        paused: the paused tokens, in pause order.
        aux_logits: auxiliary-decoder logits at each pause layer, ``(B, n, C)`` for the ``n``
            patch tokens still processed there; ``aux_index`` holds their original indices.
        aux_index: original patch indices ``(B, n)`` of the rows of ``aux_logits``.
    """

    states: dict[int, torch.Tensor]
    final: torch.Tensor
    paused: list[PausedTokens] = field(default_factory=list)
    aux_logits: dict[int, torch.Tensor] = field(default_factory=dict)
    aux_index: dict[int, torch.Tensor] = field(default_factory=dict)


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, k) of ``tokens`` (B, n, D) -> (B, k, D)."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def assemble(
    active: torch.Tensor,
    active_index: torch.Tensor,
    paused: Iterable[PausedTokens],
    num_prefix_tokens: int,
) -> torch.Tensor:
    """The patch assembler (paper App. A): every token back at its original index.

    Args:
        active: ``(B, P + n, D)`` prefix tokens followed by the patch tokens still processed.
        active_index: ``(B, n)`` original patch index of each active patch token.
        paused: the tokens paused so far, with their indices.
        num_prefix_tokens: ``P``.

    Returns:
        ``(B, P + N, D)`` with prefix tokens first and patch ``i`` at position ``P + i``.
        Differentiable with respect to every token.
    """
    paused = list(paused)
    if not paused:
        return active
    p = num_prefix_tokens
    values = torch.cat([active[:, p:], *(t.tokens for t in paused)], dim=1)
    index = torch.cat([active_index, *(t.index for t in paused)], dim=1)
    patches = torch.empty_like(values).scatter(
        1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]), values
    )
    return torch.cat([active[:, :p], patches], dim=1)


# How each mode scores the active patch tokens (given the patches, the auxiliary logits when
# computed, and the generator); the k lowest scores are paused.
Scorer = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator | None], torch.Tensor]
_SCORERS: dict[PauseMode, Scorer] = {
    PauseMode.ENTROPY: lambda patches, logits, gen: token_entropy(logits),  # type: ignore[arg-type]
    PauseMode.RANDOM: lambda patches, logits, gen: _uniform(patches, gen),
}


def _uniform(patches: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Uniform scores, drawn where the generator lives (the same draws on any device)."""
    where = gen.device if gen is not None else patches.device
    return torch.rand(patches.shape[:2], generator=gen, device=where).to(patches.device)


# Modes whose choice needs the auxiliary decoder at inference.
_NEEDS_AUX = frozenset({PauseMode.ENTROPY})


def uses_aux_decoder(mode: PauseMode | str) -> bool:
    """Whether ``mode`` runs the auxiliary decoder at inference (its cost is counted then)."""
    return PauseMode.parse(mode) in _NEEDS_AUX


def lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions ``(B, k)`` of the ``k`` lowest scores per row; ties go to the earlier position
    (a stable sort, so the choice is deterministic)."""
    return torch.argsort(scores, dim=1, stable=True)[:, :k]


class PausingViT(nn.Module):
    """A :class:`Backbone` that can pause patch tokens, with its auxiliary decoder.

    Example:
        >>> from exitsearch.backbone import create_backbone
        >>> bb = create_backbone("vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1,
        ...                      num_classes=10, embed_dim=32, depth=6, num_heads=2)
        >>> vit = PausingViT(bb, AuxDecoder(32, 10))
        >>> vit.token_counts(PauseConfig({3: 0.2, 5: 0.4}))
        [50, 50, 50, 40, 40, 20]
        >>> out = vit.forward_states(torch.zeros(2, 1, 28, 28), PauseConfig({3: 0.2}), [4])
        >>> tuple(out.states[4].shape), tuple(out.final.shape)
        ((2, 50, 32), (2, 50, 32))
    """

    def __init__(self, backbone: Backbone, aux_decoder: AuxDecoder) -> None:
        super().__init__()
        if not backbone.supports_pausing:
            raise ConfigError(
                f"token pausing (PAUMER) does not apply to {backbone.spec.model}: its "
                f"{backbone.family} blocks attend within windows of a fixed grid, which a paused "
                "token would leave with a hole; pause a plain ViT/DeiT backbone, or search this "
                "one without a pause space"
            )
        self.backbone = backbone
        self.aux = aux_decoder

    @property
    def depth(self) -> int:
        return self.backbone.depth

    @property
    def num_patches(self) -> int:
        return self.backbone.num_patches

    @property
    def num_prefix_tokens(self) -> int:
        return self.backbone.num_prefix_tokens

    def resolve(self, pause: PauseConfig | Mapping[int, float] | str | None) -> PauseConfig:
        """A checked :class:`PauseConfig` from a config, a ``{layer: fraction}`` dict or text."""
        if pause is None:
            cfg = PauseConfig()
        elif isinstance(pause, PauseConfig):
            cfg = pause
        elif isinstance(pause, str):
            cfg = PauseConfig.parse(pause)
        else:
            cfg = PauseConfig.from_dict(pause)
        cfg.check(self.depth, self.num_patches)
        return cfg

    def token_counts(self, pause: PauseConfig | Mapping[int, float] | str | None) -> list[int]:
        """Tokens (prefix included) that each block ``1..L`` processes under ``pause``."""
        cfg = self.resolve(pause)
        counts = cfg.counts(self.num_patches)
        n = self.backbone.num_tokens
        out = []
        for block in range(1, self.depth + 1):
            out.append(n)
            n -= counts.get(block, 0)
        return out

    def forward_states(
        self,
        x: torch.Tensor,
        pause: PauseConfig | Mapping[int, float] | str | None = None,
        locations: Iterable[int] = (),
        mode: PauseMode | str = PauseMode.ENTROPY,
        generator: torch.Generator | None = None,
        return_aux: bool = False,
    ) -> PausedStates:
        """Run the backbone on ``x`` (model input) with ``pause``; assemble states on request.

        Args:
            x: ``(B, C, H, W)`` input, already normalised (``backbone.input_transform()``).
            pause: the pause configuration (empty: the plain backbone, exactly).
            locations: 1-based blocks after which the assembled hidden state is wanted.
            mode: ``entropy`` (PAUMER) or ``random`` (the random-pausing baseline).
            generator: draws of random mode; ``None`` uses a generator seeded with 0.
            return_aux: run the auxiliary decoder at every pause layer even when the mode does
                not need it (training: the random baseline is trained with the same aux loss).

        Raises:
            ConfigError: a location outside ``1..L``, or a pause configuration that does not fit.
        """
        cfg = self.resolve(pause)
        mode = PauseMode.parse(mode)
        wanted = sorted(set(int(m) for m in locations))
        if wanted and not 1 <= wanted[0] <= wanted[-1] <= self.depth:
            raise ConfigError(f"locations must lie in 1..{self.depth}, got {wanted}")
        counts = cfg.counts(self.num_patches)
        if mode is PauseMode.RANDOM and generator is None and cfg:
            generator = torch.Generator(device=x.device).manual_seed(0)
        p = self.num_prefix_tokens
        tokens = self.backbone.embed(x)
        b = tokens.shape[0]
        index = torch.arange(self.num_patches, device=x.device).expand(b, -1)
        out = PausedStates(states={}, final=tokens)
        for block in range(1, self.depth + 1):
            tokens = self.backbone.run_blocks(tokens, block - 1, block)
            if block in wanted:
                out.states[block] = assemble(tokens, index, out.paused, p)
            if block not in counts:
                continue
            k = counts[block]
            patches = tokens[:, p:]
            logits = None
            if return_aux or mode in _NEEDS_AUX:
                logits = self.aux(patches)
                out.aux_logits[block], out.aux_index[block] = logits, index
            if k == 0:
                continue
            chosen = lowest(_SCORERS[mode](patches, logits, generator), k)
            keep_mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=x.device)
            keep_mask.scatter_(1, chosen, False)
            # nonzero() walks rows in order, so the kept tokens keep their relative order
            kept = keep_mask.nonzero()[:, 1].view(b, -1)
            out.paused.append(PausedTokens(block, index.gather(1, chosen), _take(patches, chosen)))
            tokens = torch.cat([tokens[:, :p], _take(patches, kept)], dim=1)
            index = index.gather(1, kept)
        out.final = assemble(tokens, index, out.paused, p)
        return out
