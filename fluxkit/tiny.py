"""The tiny random FLUX: the real architecture at a size that runs on a CPU in milliseconds.

It has FLUX's shapes (16 latent channels, 8× VAE downscale, packed 2×2 latents, CLIP + T5
text encoders; dev with the guidance embedding, schnell without), so every ML path of the
services is tested with real diffusers, peft and quanto code and no downloads (FACTS.md,
"ML stack"). Folders are built once per process and loaded like a real checkpoint.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from peft import LoraConfig
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from fluxkit.lora import TARGET_MODULES, transformer_lora_bytes

TINY_SEED = 0
_HIDDEN = 32


@functools.cache
def tiny_flux_folder(model: str = "dev") -> Path:
    """The tiny FLUX `model` saved in a temporary folder that lives as long as the process."""
    folder = Path(tempfile.mkdtemp(prefix=f"terra-tiny-flux-{model}-"))
    build_tiny_flux(seed=TINY_SEED, model=model).save_pretrained(folder)
    return folder


def build_tiny_flux(seed: int = TINY_SEED, model: str = "dev") -> FluxPipeline:
    """A randomly initialised FLUX with the real architecture, deterministic for `seed`.

    `schnell` differs from `dev` as the real ones do: no guidance embedding (and its own
    transformer weights; the encoders and the VAE are the same)."""
    if model not in ("dev", "schnell"):
        raise ValueError(f"unknown tiny FLUX {model!r}: dev or schnell")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # 16 latent channels packed 2×2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=_HIDDEN,
            pooled_projection_dim=_HIDDEN,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        )
        if model == "schnell":
            config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
            torch.manual_seed(seed + 1)
            transformer = FluxTransformer2DModel(**{**config, "guidance_embeds": False})
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(_clip_config())
        torch.manual_seed(seed)
        text_encoder_2 = T5EncoderModel(_t5_config())
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=8,
            sample_size=64,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    for module in (transformer, text_encoder, text_encoder_2, vae):
        module.eval()  # as from_pretrained leaves them: no dropout in the text encoders
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=_t5_tokenizer(),
        transformer=transformer,
    )


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, as CLIP's byte-level BPE uses."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _clip_tokenizer() -> CLIPTokenizer:
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _clip_config() -> CLIPTextConfig:
    vocab_size = 2 * 256 + 2
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        projection_dim=_HIDDEN,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,  # must be the tokenizer's <|endoftext|>
        pad_token_id=vocab_size - 1,
    )


def _t5_tokenizer() -> T5TokenizerFast:
    pieces = ["<pad>", "</s>", "<unk>", "▁"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces += [chr(c) for c in range(ord("0"), ord("9") + 1)] + list(",.!?'-_:;()")
    vocab = [(piece, 0.0 if i < 3 else -1.0) for i, piece in enumerate(pieces)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def _t5_config() -> T5Config:
    return T5Config(
        vocab_size=len(_t5_tokenizer()),
        d_model=_HIDDEN,
        d_kv=8,
        d_ff=37,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def random_lora_bytes(rank: int, seed: int = 0, *, model: str = "dev",
                      target_modules: tuple[str, ...] = TARGET_MODULES,
                      std: float = 0.05) -> bytes:
    """A LoRA file for the tiny FLUX `model` with random A and B (a trained LoRA's shape
    without the training), for tests and benches of loading and switching."""
    transformer = build_tiny_flux(model=model).transformer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                           target_modules=list(target_modules)))
        with torch.no_grad():
            for name, parameter in transformer.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, std)
    return transformer_lora_bytes(transformer)
