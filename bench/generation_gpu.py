"""Generation latency and peak VRAM per memory profile on full-size FLUX architectures (GPU).

    python -m bench.generation_gpu [--models schnell,dev] [--profiles gpu,model_offload+int8]
                                   [--compile off,on] [--size 1024] [--runs 2]
    python -m bench.generation_gpu --tiny --device cpu   # checks the code path, no GPU

Builds FLUX.1-schnell and FLUX.1-dev ARCHITECTURES with RANDOM weights, nothing downloaded:
the transformer (19 double + 38 single blocks, 24 heads × 128; dev with the guidance
embedding, schnell without), T5-XXL (d_model 4096, 24 layers, 64 heads, d_ff 10240),
CLIP-L's text model and FLUX's VAE (16 latent channels, 128/256/512/512). The tokenizers
are the tiny offline ones (their ids are valid for the real vocabularies). Each run goes
through `FluxGenerator.generate` with the model's defaults (contracts' MODEL_DEFAULTS:
schnell 4 steps, no guidance; dev 28 steps, guidance 3.5), one image at `--size`², after
one warm-up run (which also compiles). It prints the median latency, `torch.cuda.max_memory_allocated` and the peak
`MemoryProfile.expected_peak_gb` (fluxkit.placements) predicts for one resident model.
Pictures are noise. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch

FLUX_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "axes_dims_rope": (16, 56, 56),
}
T5_XXL = {"d_model": 4096, "num_layers": 24, "num_heads": 64, "d_ff": 10240, "d_kv": 64,
          "vocab_size": 32128, "feed_forward_proj": "gated-gelu", "is_gated_act": True,
          "dense_act_fn": "gelu_new", "relative_attention_num_buckets": 32}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768,
          "hidden_act": "quick_gelu"}
FLUX_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 16,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
            "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": False,
            "use_post_quant_conv": False, "shift_factor": 0.1159, "scaling_factor": 0.3611}


def random_module(factory, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Allocated empty on `device`, then filled with small random values: no slow init."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        module = factory()
    module = module.to_empty(device=device).to(dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.zero_()
    return module.eval()


def full_size_pipeline(model: str, device: torch.device, dtype: torch.dtype):
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from fluxkit.tiny import build_tiny_flux

    tiny = build_tiny_flux()
    eos = tiny.tokenizer.eos_token_id
    clip = CLIPTextConfig(vocab_size=49408, bos_token_id=eos - 1, eos_token_id=eos,
                          pad_token_id=eos, **CLIP_L)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        vae=random_module(lambda: AutoencoderKL(**FLUX_VAE), device, dtype),
        text_encoder=random_module(lambda: CLIPTextModel(clip), device, dtype),
        tokenizer=tiny.tokenizer,
        text_encoder_2=random_module(lambda: T5EncoderModel(T5Config(**T5_XXL)), device, dtype),
        tokenizer_2=tiny.tokenizer_2,
        transformer=random_module(lambda: FluxTransformer2DModel(
            **FLUX_TRANSFORMER, guidance_embeds=model == "dev"), device, dtype),
    )


def tiny_pipeline(model: str, device: torch.device, dtype: torch.dtype):
    from fluxkit.tiny import build_tiny_flux

    return build_tiny_flux(model=model).to(device=device, dtype=dtype)


def measure(model: str, profile_name: str, compiled: bool, args, device, dtype) -> str:
    from fluxkit.placements import parse_profile
    from generator_service.pipelines import FluxGenerator, GenerationRequest

    cuda = device.type == "cuda"
    profile = parse_profile(profile_name)
    # Offloaded components start on the CPU; the `gpu` profile builds on the device.
    build_on = device if profile.placement.name == "gpu" else torch.device("cpu")
    pipeline = (tiny_pipeline if args.tiny else full_size_pipeline)(model, build_on, dtype)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    generator = FluxGenerator({model: pipeline}, device=device, dtype=dtype,
                              profile=profile, compile=compiled)
    request = GenerationRequest("a photo of a lighthouse at dusk", model=model,
                                width=args.size, height=args.size, seed=0)
    times = []
    for run in range(1 + args.runs):
        if cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        generator.generate(request)
        if cuda:
            torch.cuda.synchronize(device)
        if run:  # the first run warms up (and compiles)
            times.append(time.perf_counter() - started)
    peak = f"{torch.cuda.max_memory_allocated(device) / 1e9:8.1f}" if cuda else f"{'n/a':>8}"
    expected = profile.expected_peak_gb(resident_models=1, megapixels=args.size**2 / 2**20)
    del generator, pipeline
    gc.collect()
    return (f"{model:>8} {profile.name:>20} {'on' if compiled else 'off':>7} "
            f"{statistics.median(times):9.2f} {peak} {expected:9.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="schnell,dev")
    parser.add_argument("--profiles", default="gpu,gpu+float8,model_offload,model_offload+int8,"
                                              "group_offload,group_offload+int8")
    parser.add_argument("--compile", default="off,on", help="off, on, or off,on")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2, help="timed runs after one warm-up")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny FLUX instead of the full-size architecture (a check only)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "bench.generation_gpu needs a CUDA GPU and this machine has none "
                    f"(torch {torch.__version__}); use --tiny --device cpu to check the code "
                    "path\n")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{'tiny' if args.tiny else 'full-size'} FLUX (random weights), {args.size}², {name}, "
          f"torch {torch.__version__}, {dtype}, median of {args.runs} after a warm-up")
    print(f"{'model':>8} {'profile':>20} {'compile':>7} {'seconds':>9} {'peak GB':>8} "
          f"{'expected':>9}")
    failed = 0
    for model in args.models.split(","):
        for profile in args.profiles.split(","):
            for compiled in (c == "on" for c in args.compile.split(",")):
                try:
                    print(measure(model, profile, compiled, args, device, dtype), flush=True)
                except torch.OutOfMemoryError:
                    print(f"{model:>8} {profile:>20} {'on' if compiled else 'off':>7} "
                          "out of memory", flush=True)
                except Exception as exc:  # noqa: BLE001 (one failing profile must not hide the rest)
                    failed += 1
                    print(f"{model:>8} {profile:>20} {'on' if compiled else 'off':>7} "
                          f"failed: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if failed:  # out of memory is a result; a failure is not
        sys.exit(f"{failed} of the runs failed")


if __name__ == "__main__":
    main()
