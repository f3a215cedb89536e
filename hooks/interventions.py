"""Edit routing inside a running model: disable experts, force experts, add noise, drop the shared expert.

A causal probe is only worth something if the edit happens where the model decides, so that every later
step of the family's own code sees it. Families decide differently (softmax → top-k → renormalise;
DeepSeek-V3's sigmoid with a selection bias and group limits; GPT-OSS's top-k on raw logits; Switch's
argmax under a capacity), so RouteScope never re-implements a decision. It edits the one thing every
router shares — the expert logits, the first product with `n_experts` columns computed inside the router
call — and lets the family's code do the rest:

- **disable** experts: their logits become −inf *before* top-k, so the family's own top-k, renormalisation
  and capacity logic run over the remaining experts (a softmax renormalises over them; DeepSeek-style
  routers also get −inf in their selection bias `e_score_correction_bias` for that call);
- **force** experts: every other expert's logit becomes −inf for the selected tokens, so those tokens
  are dispatched to the forced set (exactly to it when the set has `top_k` experts) with the family's
  own weights over it;
- **noise**: Gaussian noise on the router *input* (standard deviation σ × the token's RMS, so σ is
  relative) or on the logits (σ in logit units), from a seeded generator;
- **drop the shared expert**: its output is replaced by zeros.

The logits are reached with a `torch.overrides.TorchFunctionMode` pushed by a forward pre-hook on the
router and popped by its forward hook, so only products computed during that router's own call are
seen; the module's code, weights and outputs are otherwise untouched. A router whose logits are not a
linear/matmul product inside its forward raises `InterventionError` instead of silently not editing.
Hooks are plain torch hooks, so recording through nnsight or through hooks sees the edited model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from torch.overrides import TorchFunctionMode

from routescope.store.errors import InputError, InterventionError

LOGIT_OPS = frozenset({"linear", "matmul", "__matmul__", "mm", "addmm"})
"""Names of the products that may compute a router's logits (F.linear, `@`, torch.matmul, ...)."""

SELECTION_BIASES = ("e_score_correction_bias",)
"""Per-expert tensors some routers add to their scores for *selection only* (DeepSeek-V3 and its kin):
masked with the logits, or a disabled expert could still be chosen on its bias."""


@dataclass(frozen=True, kw_only=True)
class TokenSelection:
    """Which tokens a `force` edit applies to: every given filter must hold (None = no filter)."""

    samples: frozenset[int] | None = None
    """Sample ids (text models: the input's index)."""
    positions: frozenset[int] | None = None
    """Token positions (text) or patch indices (diffusion, row-major on the patch grid)."""
    token_ids: frozenset[int] | None = None
    """Vocabulary ids (text models)."""
    classes: frozenset[int] | None = None
    """Class ids (diffusion models; both CFG branches of a class's samples)."""

    @property
    def everything(self) -> bool:
        return all(v is None for v in (self.samples, self.positions, self.token_ids, self.classes))

    def to_manifest(self) -> dict[str, list[int] | None]:
        return {k: None if v is None else sorted(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class RouterEdit:
    """What to do at one router."""

    disable: tuple[int, ...] = ()
    """Experts whose logits become −inf for every token."""
    force: tuple[int, ...] = ()
    """Experts the selected tokens must choose from (all other logits −inf for those tokens)."""
    input_noise: float = 0.0
    """σ of Gaussian noise on the router input, relative to each token's RMS."""
    logit_noise: float = 0.0
    """σ of Gaussian noise on the router logits, in logit units."""
    drop_shared: bool = False
    """Replace the output of the router's shared expert(s) by zeros."""

    @property
    def edits_logits(self) -> bool:
        return bool(self.disable or self.force or self.logit_noise)


@dataclass(frozen=True, kw_only=True)
class Intervention:
    """A set of router edits, keyed by router module path, plus the token selection and noise seed."""

    edits: Mapping[str, RouterEdit]
    tokens: TokenSelection = field(default_factory=TokenSelection)
    seed: int = 0

    def to_manifest(self) -> dict[str, Any]:
        """The edits as plain JSON (only routers with a non-empty edit list their fields)."""
        routers = {
            path: {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(edit).items()}
            for path, edit in self.edits.items()
        }
        return {"routers": routers, "tokens": self.tokens.to_manifest(), "seed": self.seed}


class RowSelector(Protocol):
    """Tells, for the rows of one router call, which are the selected tokens (see `TextRows`)."""

    def on_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Called before every forward pass of the whole model with its arguments."""

    def rows(self, n_rows: int) -> torch.Tensor:
        """[n_rows] bool for the router call now running."""


def validate(intervention: Intervention, routers: Sequence[Mapping[str, Any]]) -> None:
    """Check every edit against the routers (manifest entries: path, n_experts, top_k, shared_experts)."""
    by_path = {r["path"]: r for r in routers}
    for path, edit in intervention.edits.items():
        if path not in by_path:
            raise InputError(f"no router {path!r} in this model; routers: {', '.join(by_path)}")
        router = by_path[path]
        n, k = int(router["n_experts"]), int(router["top_k"])
        for name, experts in (("disable", edit.disable), ("force", edit.force)):
            bad = [e for e in experts if not 0 <= e < n]
            if bad or len(set(experts)) != len(experts):
                raise InputError(f"{name} {list(experts)} at {path}: give distinct experts in 0..{n - 1}")
        if n - len(edit.disable) < k:
            raise InputError(
                f"disabling {len(edit.disable)} of {n} experts at {path} leaves fewer than top-k = {k}"
            )
        if edit.force and (len(edit.force) < k or set(edit.force) & set(edit.disable)):
            raise InputError(
                f"force {list(edit.force)} at {path}: give at least top-k = {k} experts, none disabled"
            )
        for name, sigma in (("input noise", edit.input_noise), ("logit noise", edit.logit_noise)):
            if not (math.isfinite(sigma) and sigma >= 0):
                raise InputError(f"{name} σ must be a finite number ≥ 0, not {sigma}")
        if edit.drop_shared and not router.get("shared_experts"):
            raise InputError(f"router {path} has no shared expert to disable")


class _LogitEdit(TorchFunctionMode):
    """Active during one router call: edits the first linear/matmul result with `n_experts` columns."""

    def __init__(self, n_experts: int, edit: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.edit = edit
        self.applied = False

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if (
            not self.applied
            and getattr(func, "__name__", "") in LOGIT_OPS
            and isinstance(out, torch.Tensor)
            and out.dim() >= 1
            and out.shape[-1] == self.n_experts
        ):
            self.applied = True
            out = self.edit(out)
        return out


class _RouterHooks:
    """The pre-hook / hook pair at one router: input noise, the logit edit, the selection-bias mask."""

    def __init__(
        self,
        path: str,
        module: torch.nn.Module,
        edit: RouterEdit,
        n_experts: int,
        selector: RowSelector | None,
        generator: torch.Generator,
    ) -> None:
        self.path, self.module, self.edit, self.n = path, module, edit, n_experts
        self.selector, self.generator = selector, generator
        self.mode: _LogitEdit | None = None
        self.saved_bias: dict[str, torch.Tensor] = {}
        disabled = torch.zeros(n_experts, dtype=torch.bool)
        disabled[list(edit.disable)] = True
        self.disabled = disabled
        forced_out = torch.ones(n_experts, dtype=torch.bool)
        forced_out[list(edit.force)] = False
        self.forced_out = forced_out if edit.force else torch.zeros(n_experts, dtype=torch.bool)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.generator, dtype=torch.float32).to(like)

    def _edit_logits(self, logits: torch.Tensor) -> torch.Tensor:
        flat = logits.reshape(-1, self.n)
        if self.edit.logit_noise:
            flat = flat + self.edit.logit_noise * self._noise(flat)
        out_mask = self.disabled.to(flat.device).expand_as(flat)
        if self.edit.force:
            selected = None if self.selector is None else self.selector.rows(flat.shape[0])
            forced = self.forced_out.to(flat.device).expand_as(flat)
            out_mask = out_mask | (forced if selected is None else forced & selected.to(flat.device)[:, None])
        if bool(out_mask.any()):
            flat = flat.masked_fill(out_mask, float("-inf"))
        return flat.reshape(logits.shape)

    def pre(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        new_args = None
        if self.edit.input_noise:
            if not args or not isinstance(args[0], torch.Tensor):
                raise InterventionError(f"router {self.path} takes no positional tensor to add noise to")
            x = args[0]
            rms = x.float().pow(2).mean(dim=-1, keepdim=True).sqrt()
            new_args = ((x.float() + self.edit.input_noise * rms * self._noise(x)).to(x.dtype), *args[1:])
        self._mask_selection_bias()
        self.mode = _LogitEdit(self.n, self._edit_logits)
        self.mode.__enter__()
        return new_args

    def post(self, _module: torch.nn.Module, _args: tuple[Any, ...], _output: Any) -> None:
        mode, self.mode = self.mode, None
        if mode is not None:
            mode.__exit__(None, None, None)
        for name, original in self.saved_bias.items():
            getattr(self.module, name).copy_(original)
        self.saved_bias.clear()
        if mode is not None and self.edit.edits_logits and not mode.applied:
            raise InterventionError(
                f"router {self.path} computed no linear/matmul with {self.n} outputs during its call, so its "
                "logits cannot be edited; declare the module that computes the logits as the router"
            )

    def _mask_selection_bias(self) -> None:
        always_out = self.disabled | self.forced_out if self.selector is None else self.disabled
        for name in SELECTION_BIASES:
            bias = getattr(self.module, name, None)
            if isinstance(bias, torch.Tensor) and bias.shape == (self.n,) and bool(always_out.any()):
                self.saved_bias[name] = bias.detach().clone()
                with torch.no_grad():
                    bias.masked_fill_(always_out.to(bias.device), float("-inf"))


def has_selection_bias(module: torch.nn.Module) -> bool:
    """Whether a router adds a per-expert selection bias (then forcing can only apply to all tokens)."""
    return any(isinstance(getattr(module, name, None), torch.Tensor) for name in SELECTION_BIASES)


def _zero_output(_module: torch.nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return torch.zeros_like(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (torch.zeros_like(output[0]), *output[1:])
    raise InterventionError(f"a shared expert returned {type(output).__name__}; cannot zero it")


@contextmanager
def intervene(
    model: torch.nn.Module,
    intervention: Intervention,
    routers: Sequence[Mapping[str, Any]],
    selector: RowSelector | None = None,
) -> Iterator[None]:
    """Apply `intervention` to `model` inside the `with` block; every hook is removed on exit.

    `routers` are the manifest's router entries (a base run's `run.routers`, or `RouterSpec.to_manifest()`);
    `selector` says which rows of a router call `force` applies to (None: every row).
    """
    validate(intervention, routers)
    by_path = {r["path"]: r for r in routers}
    names = dict(model.named_modules())
    generator = torch.Generator().manual_seed(int(intervention.seed))
    if selector is not None and not intervention.tokens.everything:
        for path, edit in intervention.edits.items():
            if edit.force and has_selection_bias(names[path]):
                raise InputError(
                    f"router {path} chooses with a per-expert selection bias; force all tokens there "
                    "(no token selection)"
                )
    handles: list[Any] = []
    try:
        if selector is not None:
            handles.append(
                model.register_forward_pre_hook(
                    lambda _m, args, kwargs: selector.on_forward(args, kwargs), with_kwargs=True
                )
            )
        for path, edit in intervention.edits.items():
            hooks = _RouterHooks(
                path, names[path], edit, int(by_path[path]["n_experts"]), selector, generator
            )
            handles.append(names[path].register_forward_pre_hook(hooks.pre))
            handles.append(names[path].register_forward_hook(hooks.post, always_call=True))
            if edit.drop_shared:
                for shared in by_path[path].get("shared_experts") or []:
                    handles.append(names[shared].register_forward_hook(_zero_output))
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()
