"""The method contract: a masking strategy owns what the encoder sees and how hidden
positions are filled before the shared decoder. Everything else is shared (fairness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from bench.core.cards import MethodCard
from bench.core.errors import UnknownMethodError
from bench.core.options import LayoutOptions, MethodOptions
from bench.core.registry import Registry
from bench.ops.masking import Visible, visible_for_ratio
from methods import CARDS, method_cards

METHODS: Registry[type[MaskingMethod]] = Registry("method", UnknownMethodError)
FILL_SITES = ("encoder", "decoder")  # where the shared pretrainer may call a method's fill
FillRule = Callable[[Tensor, Visible, tuple[int, ...]], Tensor]  # `fill`'s signature


class MaskingMethod(nn.Module):
    """Base class of every strategy (ARCHITECTURE.md, "The method contract").

    A subclass is registered with its card (`@register_method(CARD)`, which sets `name`,
    `modalities`, `encoder_kinds` and `Options` from it) and implements `fill`;
    `choose_visible` follows `layout()` (override either for another rule). Where the shared
    pretrainer fills is `fill_site(options)`: "decoder" (the default; after the shared
    projection, where MAE inserts its mask token) or "encoder" (on the encoder's features,
    then the projection); `dim` is the width of that site. Optional hooks: `regularizer()`
    (a term the pretrainer adds to the loss), `diagnostics()` (named floats a run
    records) and `neighbour_maps()` (the fill's one-step linear maps, which linear
    predictability compares with the maps fitted on the encoder's features).
    """

    name: ClassVar[str]
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    # "token": a ViT-like encoder that can drop tokens; "dense": a CNN that needs a block.
    encoder_kinds: ClassVar[frozenset[str]] = frozenset({"token"})
    Options: ClassVar[type[MethodOptions]] = LayoutOptions

    def __init__(self, options: MethodOptions, dim: int, modality: str):
        super().__init__()
        self.options, self.dim, self.modality = options, dim, modality

    @classmethod
    def fill_site(cls, options: MethodOptions) -> str:
        """Where a method with `options` fills: "encoder" or "decoder" (`FILL_SITES`)."""
        return "decoder"

    def layout(self) -> tuple[str, str]:
        """(layout, block position) of what the encoder sees, for `visible_for_ratio`: read
        from `LayoutOptions`; a method with its own rule overrides this or `choose_visible`."""
        return self.options.visible, self.options.block_position

    def choose_visible(self, batch: int, grid: tuple[int, ...], generator) -> Visible:
        """`visible_count(grid, mask_ratio)` positions in `layout()`, drawn from `generator`."""
        layout, position = self.layout()
        return visible_for_ratio(batch, grid, self.options.mask_ratio, layout, position, generator)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters AdamW must not decay (timm's convention): all of a method's
        own. They make up the fill rule itself (a [MASK] token, heat operators under any
        parameterisation), so no strategy or parameterisation is regularised and another not."""
        return {name for name, _ in self.named_parameters()}

    def fill(self, latent: Tensor, visible: Visible, grid: tuple[int, ...]) -> Tensor:
        """`latent [B, K, dim]` of the visible positions (in `visible.index` order) ->
        `[B, N, dim]` for every grid position, the visible ones unchanged."""
        raise NotImplementedError

    def ablated_fills(self) -> dict[str, FillRule]:
        """Other fills built from this one that a run scores on its held-out masks (name ->
        rule taking `fill`'s arguments), so the report shows what the learned part adds:
        `recon_loss_fill_<name>` beside `recon_loss` (a constant fill is scored for every
        method). None by default."""
        return {}

    def regularizer(self) -> Tensor | None:
        """A scalar the pretrainer adds to the training loss (None: nothing). It is computed
        in float32, outside autocast, like `fill`."""
        return None

    def diagnostics(self) -> dict[str, float]:
        """Named figures of the trained fill rule a run records at the end and at
        `--eval-every` points (metric names; none by default)."""
        return {}

    def neighbour_maps(self) -> dict[str, Tensor] | None:
        """Where the fill moves the ENCODER's features one position along a grid axis by a
        fixed linear map: those maps as row-vector matrices (next = z @ M), by axis ("x": one
        column on, or one token on for text; "y": one row down). None (the default) where the
        fill is no such map (bench.eval.linpred then reports no comparison)."""
        return None

    def describe(self, grid: tuple[int, ...]) -> str:
        """One line a report can show: what the encoder sees and how the rest is filled."""
        return self.__doc__.strip().splitlines()[0] if self.__doc__ else self.name


def register_method(card: MethodCard | str):
    """Class decorator adding the class to the method registry under its card
    (`@register_method(CARD)`: the class takes the card's modalities, encoder kinds and
    options). A single-file method gives its name instead (`@register_method("mine")`): its
    card is made from the class's attributes and docstring."""

    def decorator(cls: type[MaskingMethod]) -> type[MaskingMethod]:
        if isinstance(card, MethodCard):
            cls.card = method_cards().get(card.name)  # the registered one (it knows its module)
            cls.modalities, cls.encoder_kinds = card.modalities, card.encoder_kinds
            cls.Options = card.Options
        else:
            cls.card = MethodCard(card, summary_line(cls.__doc__), cls.modalities,
                                  cls.encoder_kinds, cls.Options)
            CARDS.register(card)(cls.card)
        cls.name = cls.card.name
        return METHODS.register(cls.name)(cls)

    return decorator


def summary_line(doc: str | None) -> str:
    """A method's one line for `bench list`: the first line of its class docstring."""
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


def method_class(name: str) -> type[MaskingMethod]:
    """The class of method `name`, its module imported on first use."""
    if name not in METHODS:
        method_cards().get(name).load()  # UnknownMethodError names the known ones
    return METHODS.get(name)


def build_method(
    name: str,
    raw_options: dict[str, Any],
    dim: int,
    modality: str,
    encoder_kind: str | frozenset[str],
    encoder_dim: int | None = None,
) -> MaskingMethod:
    """Method `name` for `modality` on an encoder of `encoder_kind` (the kinds it offers),
    built at the width of where it fills: `dim` (the decoder width) or, for a method that
    fills at the encoder, `encoder_dim` (default: the same as `dim`)."""
    cls = method_class(name)
    options = cls.card.options(raw_options)
    cls.card.check(modality, encoder_kind, options=options)
    site = cls.fill_site(options)
    if site not in FILL_SITES:
        raise ValueError(f"method {name!r} fills at {site!r}; known: {', '.join(FILL_SITES)}")
    width = encoder_dim if site == "encoder" and encoder_dim is not None else dim
    return cls(options, width, modality)
