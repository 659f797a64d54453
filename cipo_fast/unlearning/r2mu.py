"""R²MU: reasoning-aware representation misdirection (Wang et al. 2025, "Reasoning Model Unlearning:
Forgetting Traces, Not Just Answers, While Preserving Reasoning Skills", arXiv 2506.12963).

The objective reads one activation: h_θ(t) ∈ R^d, the output of decoder layer ℓ at token t (transformers'
`hidden_states[ℓ + 1]`; `hidden_states[0]` is the embedding). With u a fixed random unit vector, c the
steering coefficient and h_0 the original model's activations,

    L =     1/(N_f d) Σ_{t ∈ forget}  ||h_θ(t) − c·u||²      forget: RMU's misdirection of the forget data
      + α   1/(N_r d) Σ_{t ∈ retain}  ||h_θ(t) − h_0(t)||²   retain: the original activations kept
      + λ_u 1/(N_u d) Σ_{t ∈ unthink} ||h_θ(t) − c·u||²      unthink: the first K tokens of the reasoning
                                                             trace the original model generates (greedy) for
                                                             each forget prompt, in that prompt's context
      + λ_c 1/(N_c d) Σ_{t ∈ cot}     ||h_θ(t) − h_0(t)||²   CoT preservation: reasoning traces (LIMO in
                                                             the paper; GSM8K CoTs here)

N_x is the number of tokens term x counts in the optimizer step, so each term is the mean squared error of
its real tokens, whatever the micro-batch split. u is `torch.rand(d)` (uniform on [0, 1)) normalised,
from a generator seeded with the run's seed. Which tokens count: the forget sequences' completions (or all
their tokens), the trace tokens of an unthink sequence (its prompt is context only), every token of the
retain and CoT sequences. The authors' code (github.com/OPTML-Group/Unlearn-R2MU, unlearn_r2mu.py:249-301)
averages `F.mse_loss` over left-padded batches, so its pad tokens (EOS) are steered to c·u or held at h_0
like real ones; here sequences are packed without padding and only counted tokens enter a term.

How a step runs (`accumulate`):

* only the chosen matrices require gradients (by default `mlp.down_proj.weight` of layers ℓ−2, ℓ−1, ℓ;
  `prepare` freezes everything else and keeps a copy of the chosen matrices' original values);
* nothing above ℓ runs: no upper layers, final norm or LM head (`forward_to_layer`);
* the layers below s = the first trained layer are the same in the trained and the original model: they
  run once, without gradients, and their output feeds the trained layers s..ℓ (with gradients) and, for
  the preserved terms, the same layers with the original matrices swapped in (`torch.func.functional_call`:
  no second model in memory, only the copy of the trained matrices);
* sequences are packed padding-free under the token budget (`cipo_fast.data.packing`), the steered terms
  (forget, unthink) and the preserved ones (retain, CoT) in separate micro-batches, so the original-model
  layers run on preserved tokens only. Each micro-batch is backpropagated as soon as it is computed.

The truncated forward rebuilds what the decoder does before its layers (token embedding, rotary embeddings,
the mask of each layer type for the attention in use, the packed-sequence arguments of `cipo_varlen` /
flash-attn) and `check_truncated_forward` compares it with the model's own `output_hidden_states` on a
packed probe, so a decoder that does more (an embedding scale, say) fails loudly instead of training on
the wrong activations.

What it deliberately does not do: the authors' code runs both full models with a forward hook on layer ℓ
(LM head included, every layer twice, and three of its CoT-data forwards are only logged); it draws u from
the global RNG. Neither is reproduced.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from cipo_fast.data.packing import MicroBatch, Sequence, pack
from cipo_fast.model.attention import packed_kwargs
from cipo_fast.model.loading import base_model

MISDIRECT = "misdirect"  # target c·u
PRESERVE = "preserve"  # target h_0, the original model's activation


def steering_vector(hidden_size: int, coeff: float, seed: int) -> torch.Tensor:
    """c·u `[d]` fp32: u = a uniform [0, 1)^d draw of its own seeded generator, over its norm (so every
    component is positive, as in the authors' `torch.rand(...) / torch.norm(...)`)."""
    u = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return coeff * u / u.norm()


@torch.no_grad()
def adaptive_coeff(model, layer: int, seqs: list[tuple[Sequence, int]], scale: float, budget: int) -> float:
    """Adaptive RMU's steering coefficient (Dang et al. 2025, "On Effects of Steering Latent Representation
    for Large Language Model Unlearning", AAAI, arXiv 2408.06223): c = β × the mean over the sequences of
    each one's mean per-token L2 norm of the layer-ℓ output, on the model as it is (the original, before
    training) and the first forget batch; their code takes β = 5 (`--scale 5.0`). Counted tokens only
    (`seqs`: (sequence, first position that counts)), where their code averages over padded batches."""
    device = next(model.parameters()).device
    per_seq = []
    for mb in pack([(s,) for s, _ in seqs], budget):
        mb = mb.to(device)
        norms = forward_to_layer(model, mb, layer).float().norm(dim=-1)  # [T]
        first = torch.tensor([seqs[g][1] for g in mb.groups], device=device)[mb.seq_ids]
        counted = (mb.position_ids >= first).float()
        total = torch.zeros(mb.num_seqs, device=device).index_add_(0, mb.seq_ids, norms * counted)
        count = torch.zeros(mb.num_seqs, device=device).index_add_(0, mb.seq_ids, counted)
        per_seq += (total / count.clamp(min=1))[count > 0].tolist()
    if not per_seq:
        raise ValueError("--r2mu-adaptive-scale: the first forget batch has no counted tokens")
    return scale * sum(per_seq) / len(per_seq)


def r2mu_loss(h: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`Σ_t w_t · (1/d) ||h_t − y_t||²` in fp32: `h` `[T, d]`, `target` `[T, d]` (h_0) or `[d]` (c·u),
    `weight` `[T]` (a term's weight over its token count on counted tokens, 0 elsewhere)."""
    return (weight * (h.float() - target.float()).pow(2).mean(-1)).sum()


@dataclass(frozen=True)
class Term:
    """One term of the objective for one optimizer step."""

    name: str  # forget | retain | unthink | cot (the metric is `loss/<name>`)
    target: str  # MISDIRECT | PRESERVE
    weight: float
    seqs: tuple[tuple[Sequence, int], ...]  # (sequence, first position that counts)

    @property
    def tokens(self) -> int:
        return sum(max(0, len(s) - first) for s, first in self.seqs)


@dataclass
class Steered:
    """A model seen up to layer ℓ, with the matrices R²MU trains and their original values."""

    model: object
    layer: int  # ℓ
    start: int  # s, the first trained layer: layers below it are frozen in both models
    trainable: dict[str, torch.nn.Parameter]  # full parameter name -> parameter (requires grad)
    original: dict[int, dict[str, torch.Tensor]]  # layer -> {name inside the layer: original value}

    @property
    def decoder(self):
        return base_model(self.model).get_decoder()


def prepare(model, layer: int, train_layers: tuple[int, ...], params: tuple[str, ...]) -> Steered:
    """Freeze every parameter but `params` (names inside a decoder layer) of `train_layers`; keep a copy of
    their current values as the original model's."""
    decoder = base_model(model).get_decoder()
    n = len(decoder.layers)
    if not 0 <= layer < n:
        raise ValueError(f"--r2mu-layer {layer}: the model has {n} decoder layers (0..{n - 1})")
    assert train_layers and all(0 <= i <= layer for i in train_layers), (train_layers, layer)
    for p in model.parameters():
        p.requires_grad_(False)
    full_name = {id(p): name for name, p in model.named_parameters()}
    trainable, original = {}, {}
    for i in sorted(set(train_layers)):
        named = dict(decoder.layers[i].named_parameters())
        for name in params:
            if name not in named:
                raise ValueError(
                    f"--r2mu-params {name}: decoder layer {i} has no such parameter (it has {', '.join(named)})"
                )
            p = named[name].requires_grad_(True)
            trainable[full_name[id(p)]] = p
            original.setdefault(i, {})[name] = p.detach().clone()
    return Steered(model, layer, min(train_layers), trainable, original)


@dataclass
class Stream:
    """What every decoder layer reads for one packed micro-batch."""

    position_ids: torch.Tensor  # [1, T], restarting at 0 per sequence
    position_embeddings: tuple  # rotary (cos, sin)
    masks: dict  # layer type -> the mask the decoder would build (None for packed varlen attention)
    kwargs: dict  # cu_seq_lens / max_length for the attention function


def _layer_type(config, i: int) -> str:
    types = getattr(config, "layer_types", None)
    return types[i] if types else "full_attention"


def _mask(maker, config, embeds: torch.Tensor, position_ids: torch.Tensor):
    """`maker(...)` as the decoder calls it without a padding mask or cache (argument names of
    transformers 5.x, whose early releases still called the cache `past_key_values`)."""
    names = inspect.signature(maker).parameters
    kw = {"config": config, "attention_mask": None, "position_ids": position_ids}
    kw["inputs_embeds" if "inputs_embeds" in names else "input_embeds"] = embeds
    for name in ("cache", "past_key_values"):  # one of them: 5.25 warns when both are passed
        if name in names:
            kw[name] = None
            break
    if "cache_position" in names:
        kw["cache_position"] = torch.arange(embeds.shape[1], device=embeds.device)
    return maker(**kw)


def embed(decoder, mb: MicroBatch, layers: int) -> tuple[torch.Tensor, Stream]:
    """Token embeddings `[1, T, d]` of a packed micro-batch and what layers `0..layers-1` read."""
    from transformers import masking_utils

    makers = {
        "full_attention": masking_utils.create_causal_mask,
        "sliding_attention": masking_utils.create_sliding_window_causal_mask,
    }
    h = decoder.embed_tokens(mb.input_ids[None])
    pos = mb.position_ids[None]
    masks = {}
    for i in range(layers):
        kind = _layer_type(decoder.config, i)
        if kind not in masks:
            if kind not in makers:
                raise ValueError(
                    f"decoder layer {i} uses {kind!r} attention; R²MU's truncated forward knows "
                    f"{', '.join(makers)} (a Llama/Qwen/Mistral-style decoder)"
                )
            masks[kind] = _mask(makers[kind], decoder.config, h, pos)
    stream = Stream(pos, decoder.rotary_emb(h, pos), masks, packed_kwargs(mb.cu_seqlens, mb.max_seqlen))
    return h, stream


def run_layers(decoder, h: torch.Tensor, stream: Stream, start: int, stop: int, swap=None) -> torch.Tensor:
    """Decoder layers `start..stop-1` on `h` `[1, T, d]`; `swap` ({layer: {name: tensor}}) runs those
    layers with the given values in place of their parameters (the original model's matrices)."""
    for i in range(start, stop):
        layer = decoder.layers[i]
        kw = dict(
            attention_mask=stream.masks[_layer_type(decoder.config, i)],
            position_ids=stream.position_ids,
            position_embeddings=stream.position_embeddings,
            **stream.kwargs,
        )
        if swap and i in swap:
            h = torch.func.functional_call(layer, swap[i], (h,), kw)
        else:
            h = layer(h, **kw)
        h = h[0] if isinstance(h, tuple) else h
    return h


def forward_to_layer(model, mb: MicroBatch, layer: int) -> torch.Tensor:
    """Output `[T, d]` of decoder layer `layer` for a packed micro-batch (`hidden_states[layer + 1]` of
    the full model, which runs nothing above it here)."""
    decoder = base_model(model).get_decoder()
    h, stream = embed(decoder, mb, layer + 1)
    return run_layers(decoder, h, stream, 0, layer + 1)[0]


def steered_forward(st: Steered, mb: MicroBatch, original: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(h_θ `[T, d]` with gradients into the trained matrices, h_0 `[T, d]` or None): layers below s run
    once without gradients and feed both."""
    decoder = st.decoder
    with torch.no_grad():
        h, stream = embed(decoder, mb, st.layer + 1)
        h = run_layers(decoder, h, stream, 0, st.start)
    ours = run_layers(decoder, h, stream, st.start, st.layer + 1)[0]
    if not original:
        return ours, None
    with torch.no_grad():
        return ours, run_layers(decoder, h, stream, st.start, st.layer + 1, st.original)[0]


def accumulate(
    st: Steered,
    terms: list[Term],
    steer: torch.Tensor,
    token_budget: int,
    autocast: torch.dtype | None = None,
) -> dict[str, float]:
    """Forward + backward of one optimizer step (gradients accumulate in the trained matrices). Returns
    each term's unweighted value by name; the step's loss is `Σ term.weight · value`."""
    device = steer.device
    values = {t.name: 0.0 for t in terms}
    ctx = torch.autocast(device.type, dtype=autocast) if autocast else nullcontext()
    for target in (MISDIRECT, PRESERVE):
        members = [
            (k, seq, first)
            for k, t in enumerate(terms)
            if t.target == target and t.tokens
            for seq, first in t.seqs
            if len(seq) > first
        ]
        if not members:
            continue
        scale = torch.tensor([t.weight / max(1, t.tokens) for t in terms], device=device)
        inv_tokens = torch.tensor([1.0 / max(1, t.tokens) for t in terms], device=device)
        for mb in pack([(seq,) for _, seq, _ in members], token_budget):
            mb = mb.to(device)
            inside = [members[g] for g in mb.groups]  # sequence k of the stream is members[mb.groups[k]]
            term_of = torch.tensor([k for k, _, _ in inside], device=device)[mb.seq_ids]  # [T]
            first = torch.tensor([f for _, _, f in inside], device=device)[mb.seq_ids]  # [T]
            counted = (mb.position_ids >= first).float()  # [T]
            with ctx:
                ours, orig = steered_forward(st, mb, target == PRESERVE)
            y = steer if target == MISDIRECT else orig
            r2mu_loss(ours, y, scale[term_of] * counted).backward()
            with torch.no_grad():
                for k in set(term_of.tolist()):
                    w = inv_tokens[term_of] * counted * (term_of == k)
                    values[terms[k].name] += float(r2mu_loss(ours, y, w))
    return values


@torch.no_grad()
def check_truncated_forward(model, layer: int, probes: list[tuple[int, ...]]) -> None:
    """Compare `forward_to_layer` on the probes packed together with the model's own
    `hidden_states[layer + 1]` of each probe alone; raise a ValueError if they differ."""
    probes = [tuple(p) for p in probes if len(p) >= 2]
    assert probes, "check_truncated_forward needs probes of at least two tokens"
    decoder = base_model(model).get_decoder()
    device = decoder.embed_tokens.weight.device
    was_training = model.training
    model.eval()
    (mb,) = pack([(Sequence(p[:1], p[1:]),) for p in probes], sum(map(len, probes)))
    got = forward_to_layer(model, mb.to(device), layer).float()
    last = layer == len(decoder.layers) - 1  # transformers returns the last layer's output normed
    tol = 1e-3 if decoder.embed_tokens.weight.dtype == torch.float32 else 5e-2
    for k, (a, b) in enumerate(zip(mb.cu_seqlens[:-1].tolist(), mb.cu_seqlens[1:].tolist())):
        ids = torch.tensor(probes[mb.groups[k]], device=device)[None]
        want = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0].float()
        mine = decoder.norm(got[a:b].to(decoder.norm.weight.dtype)).float() if last else got[a:b]
        err = (mine - want).abs().max().item()
        if err > tol * max(1.0, want.abs().max().item()):
            model.train(was_training)
            raise ValueError(
                f"{type(base_model(model)).__name__}: R²MU's truncated forward differs from the model's own "
                f"layer-{layer} hidden states by {err:.3g}; its decoder does something before or between its "
                "layers that cipo-fast does not rebuild (supported: Llama/Qwen/Mistral-style decoders)"
            )
    model.train(was_training)
