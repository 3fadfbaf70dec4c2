"""Planning head training in groups that fit in memory.

Every candidate head trains on hidden states of one frozen backbone pass per batch. With many
heads on a large backbone (121 default candidates of ViT-S hold 92.5 M parameters; of ViT-B about
four times that), the heads' gradients and Adam state alone can outgrow the machine. The plan
packs heads, in order of location, into groups whose estimated peak fits a memory limit; each group
trains on its own pass over the data (one backbone pass per batch, up to the group's deepest
location only), and a head trains exactly as it would in one group: its initial weights, dropout
and the epochs' shuffling come from seeds of its own.

The estimate is a planning figure, not a measurement. Per parameter: 8 bytes for every head
(weights and a copy of the best weights), 24 more for the heads of the group in training
(gradients, Adam's two moments, and the epoch checkpoint's copies). Per batch: the hidden states
the group reads, one block's activations of the backbone pass, and the largest head's activations
kept for its backward pass, measured once per head type by recording what autograd saves.
On CUDA the group's heads live on the GPU and the others wait on the CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from exitsearch._memory import available_memory
from exitsearch.backbone.adapter import Backbone
from exitsearch.device import Runtime
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.units import format_bytes

__all__ = ["HeadGroupPlan", "activation_bytes", "default_memory_limit", "plan_head_groups"]

ALL_HEADS_BYTES_PER_PARAM = 8
GROUP_BYTES_PER_PARAM = 24
# Share of the memory available at the start that the plan may use by default: the data loader's
# workers, the evaluator and the operating system live in the rest.
DEFAULT_SHARE = 0.5


@dataclass(frozen=True)
class HeadGroupPlan:
    """Which heads train together (indices into the bank) and what each group is expected to take.

    Attributes:
        groups: head indices per group, in training order.
        group_bytes: estimated peak of each group (on the GPU for CUDA, else of the process).
        shared_bytes: estimated bytes held whatever the group (every head's weights and best copy).
        limit: the memory limit the plan was made for.
        where: the device the groups train on.
    """

    groups: tuple[tuple[int, ...], ...]
    group_bytes: tuple[int, ...]
    shared_bytes: int
    limit: int
    where: str

    def __len__(self) -> int:
        return len(self.groups)

    def keys(self, specs: Sequence[HeadSpec]) -> list[list[str]]:
        return [[specs[i].key for i in g] for g in self.groups]

    def describe(self, specs: Sequence[HeadSpec]) -> str:
        """The plan in one or two lines for the run's log."""
        n = sum(len(g) for g in self.groups)
        if len(self.groups) == 1:
            return (
                f"heads: {n} head{'s' if n != 1 else ''} in one group on {self.where}, "
                "estimated peak "
                f"{format_bytes(self.group_bytes[0] + self.shared_bytes)} of the "
                f"{format_bytes(self.limit)} limit (--head-memory)"
            )
        parts = ", ".join(
            f"{len(g)} at {_blocks(specs[g[0]].location, specs[g[-1]].location)} "
            f"({format_bytes(b)})"
            for g, b in zip(self.groups, self.group_bytes, strict=True)
        )
        return (
            f"heads: {n} heads do not fit in {format_bytes(self.limit)} together (--head-memory); "
            f"{len(self.groups)} groups on {self.where}, one backbone pass per batch each: {parts}; "
            f"plus {format_bytes(self.shared_bytes)} for every head's weights"
        )


def _blocks(first: int, last: int) -> str:
    return f"block {first}" if first == last else f"blocks {first}-{last}"


def default_memory_limit(rt: Runtime) -> int:
    """Half the memory available now (of the GPU on CUDA); 8 GiB when the system does not say."""
    if rt.is_cuda:
        free, _ = torch.cuda.mem_get_info(rt.device)
        return int(free * 0.8)
    available = available_memory()
    return int(available * DEFAULT_SHARE) if available else 8 << 30


def activation_bytes(head: torch.nn.Module, sample: torch.Tensor) -> int:
    """Bytes autograd keeps for ``head``'s backward pass, per sample of ``sample``'s batch."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    # On a copy, with the random state restored: the measurement must not move a batch norm's
    # statistics, a head's own counters or the dropout draws of the training that follows.
    probe = copy.deepcopy(head).train()
    with (
        torch.random.fork_rng(devices=[]),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        probe(sample)
    # Parameters are saved too (a linear layer keeps its weight), and so is the input, which the
    # plan counts with the hidden states: neither is an activation of the head.
    shared = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    shared.add(sample.untyped_storage().data_ptr())
    kept = sum(b for (ptr, _), b in seen.items() if ptr not in shared)
    return -(-kept // len(sample))


def plan_head_groups(
    backbone: Backbone,
    bank: HeadBank,
    batch_size: int,
    rt: Runtime,
    limit: int | None = None,
    fixed: Sequence[Sequence[int]] | None = None,
) -> HeadGroupPlan:
    """Pack the bank's heads, by location, into groups whose estimated peak fits ``limit``.

    ``fixed`` gives the groups instead (a resumed checkpoint's), for their estimates only.

    Raises:
        ConfigError: even one head with the shared state does not fit in ``limit``.
    """
    limit = default_memory_limit(rt) if limit is None else int(limit)
    if limit <= 0:
        raise ConfigError(f"the head memory limit must be positive, but got {limit} bytes")
    itemsize = 2 if rt.amp_dtype is not None else 4
    # Bytes of the hidden states kept up to block m (their shapes change by stage on Swin).
    state_bytes = [0]
    for m in range(1, backbone.depth + 1):
        elems = backbone.state_tokens(m) * backbone.state_dim(m)
        state_bytes.append(state_bytes[-1] + batch_size * elems * itemsize)
    # One block of the frozen pass: attention scores and the MLP's hidden layer, in float32; the
    # largest over the blocks.
    block = max(
        batch_size
        * backbone.state_tokens(m)
        * (backbone.state_heads(m) * backbone.attention_span(m) + 4 * backbone.state_dim(m))
        * 4
        for m in range(backbone.depth)
    )
    act_per_type: dict[str, int] = {}
    params: list[int] = []
    acts: list[int] = []
    for spec, head in bank:
        params.append(sum(p.numel() for p in head.parameters()))
        kind = spec.to_dict().get("type", spec.key)
        shape_key = f"{kind}:{params[-1]}:{backbone.state_grid(spec.location)}"
        if shape_key not in act_per_type:
            sample = backbone.state_example(spec.location, batch=2)
            act_per_type[shape_key] = activation_bytes(head, sample)
        # Twice: the saved activations and their gradients during the backward pass.
        acts.append(2 * act_per_type[shape_key] * batch_size)
    all_heads = sum(params) * ALL_HEADS_BYTES_PER_PARAM
    shared = all_heads if not rt.is_cuda else 0
    order = sorted(range(len(bank)), key=lambda i: (bank.specs[i].location, i))

    def cost(group: list[int]) -> int:
        deepest = max(bank.specs[i].location for i in group)
        own = sum(params[i] for i in group) * (GROUP_BYTES_PER_PARAM + (4 if rt.is_cuda else 0))
        return state_bytes[deepest] + block + max(acts[i] for i in group) + own

    groups: list[list[int]] = [list(g) for g in fixed or ()]
    for i in order if fixed is None else ():
        if groups and cost([*groups[-1], i]) + shared <= limit:
            groups[-1].append(i)
            continue
        if cost([i]) + shared > limit:
            spec = bank.specs[i]
            raise ConfigError(
                f"head {spec.key} alone needs an estimated {format_bytes(cost([i]) + shared)} to "
                f"train at batch {batch_size}, more than the {format_bytes(limit)} head memory "
                "limit; lower --head-batch-size or raise --head-memory"
            )
        groups.append([i])
    return HeadGroupPlan(
        groups=tuple(tuple(sorted(g)) for g in groups),
        group_bytes=tuple(cost(g) for g in groups),
        shared_bytes=shared,
        limit=limit,
        where=rt.describe(),
    )
