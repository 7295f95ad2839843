"""The shared FLUX kit alone: the placement table and the profiles built on it, the LoRA
file format against diffusers' own writer and reader, the one maximum rank, quantization
names, the out-of-memory error, base model names."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

import safetensors.torch
from diffusers import FluxPipeline

from fluxkit.errors import OutOfGpuMemory, out_of_memory_as
from fluxkit.loading import base_model_name
from fluxkit.lora import (
    MAX_RANK,
    TARGET_MODULES,
    WEIGHT_NAME,
    LoraFormatError,
    load_lora,
    lora_to_bytes,
    read_lora,
)
from fluxkit.placements import (
    EIGHT_GB,
    GPU,
    GROUP_OFFLOAD,
    MODEL_OFFLOAD,
    PLACEMENTS,
    SEQUENTIAL_OFFLOAD,
    MemoryProfile,
    MemoryProfileError,
    choose_profile,
    parse_profile,
    resolve_profile,
)
from fluxkit.quantize import weights_of
from fluxkit.tiny import build_tiny_flux, random_lora_bytes

# --- placements and profiles -------------------------------------------------------------


def test_the_placement_table_says_what_each_needs_lifts_and_shares():
    assert list(PLACEMENTS) == ["gpu", "model_offload", "group_offload", "sequential_offload"]
    table = {name: (p.needs_cuda, p.lifts_hooks, p.shares_encoders)
             for name, p in PLACEMENTS.items()}
    assert table == {
        "gpu": (False, False, True),
        "model_offload": (False, True, False),
        "group_offload": (False, False, False),  # diffusers re-applies group offloading
        "sequential_offload": (True, True, False),
    }


def test_profiles_parse_from_settings():
    assert parse_profile("gpu") == MemoryProfile("gpu", "none") == MemoryProfile(GPU)
    assert parse_profile("model_offload+int8") == MemoryProfile(MODEL_OFFLOAD, "int8")
    assert parse_profile(" Group_Offload+float8 ").name == "group_offload+float8"
    assert parse_profile("auto") is None
    assert parse_profile("8gb") == EIGHT_GB and EIGHT_GB.quantized
    assert EIGHT_GB.placement is GROUP_OFFLOAD
    with pytest.raises(MemoryProfileError, match="unknown placement"):
        parse_profile("everywhere")
    with pytest.raises(MemoryProfileError, match="unknown weights"):
        parse_profile("gpu+int4")


def test_expected_peak_vram_follows_component_sizes():
    table = {name: parse_profile(name).expected_peak_gb() for name in (
        "gpu", "gpu+float8", "model_offload", "model_offload+int8", "group_offload",
        "group_offload+int8", "sequential_offload")}
    assert table == {
        "gpu": 59.5, "gpu+float8": 31.0, "model_offload": 25.8, "model_offload+int8": 13.9,
        "group_offload": 3.5, "group_offload+int8": 2.8, "sequential_offload": 2.1,
    }
    assert MemoryProfile(GPU).expected_peak_gb(resident_models=1) == 35.7
    assert GPU.expected_peak_gb(resident_models=1, megapixels=4) == 41.7  # 2048² in the loop
    assert EIGHT_GB.expected_peak_gb() < 8  # the 8 GB profile fits an 8 GB card


def test_auto_picks_the_fastest_profile_that_fits():
    assert choose_profile(80).name == "gpu"
    assert choose_profile(40, eight_bit="float8").name == "gpu+float8"
    assert choose_profile(30).name == "model_offload"
    assert choose_profile(16).name == "model_offload+int8"
    assert choose_profile(8).name == "group_offload"
    assert choose_profile(4.5).name == "group_offload+int8"
    assert choose_profile(2).name == "sequential_offload+int8"
    # The trainer's samples: one model, never quantized.
    assert choose_profile(40, eight_bit=None, resident_models=1).name == "gpu"
    assert choose_profile(30, eight_bit=None, resident_models=1).name == "model_offload"
    assert choose_profile(16, eight_bit=None, resident_models=1).name == "group_offload"
    assert choose_profile(2, eight_bit=None).name == "sequential_offload"


def test_placements_needing_cuda_are_refused_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_profile("auto", cpu) == MemoryProfile(GPU)
    assert resolve_profile("auto", cpu, resident_models=1, quantize=False).placement is GPU
    with pytest.raises(MemoryProfileError, match="needs a CUDA device"):
        resolve_profile("sequential_offload", cpu)
    with pytest.raises(MemoryProfileError, match="needs a CUDA device"):
        SEQUENTIAL_OFFLOAD.apply(build_tiny_flux(), cpu)
    assert resolve_profile("group_offload+int8", cpu).name == "group_offload+int8"


# --- the LoRA format ------------------------------------------------------------------------


def test_lora_bytes_are_what_diffusers_writes_and_reads(tmp_path):
    """`lora_to_bytes` writes diffusers' file: the same header and the same tensor bytes
    (safetensors writes the header's metadata in no fixed order, and diffusers a set of
    target modules in whatever order it iterates: sorted here), and `read_lora` reads what
    diffusers' own loader reads from that file."""
    pipeline = build_tiny_flux()
    load_lora(pipeline, random_lora_bytes(8, seed=1), adapter_name="x")
    from peft.utils import get_peft_model_state_dict

    layers = get_peft_model_state_dict(pipeline.transformer, adapter_name="x")
    config = pipeline.transformer.peft_config["x"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    FluxPipeline.save_lora_weights(tmp_path, transformer_lora_layers=layers,
                                   transformer_lora_adapter_metadata=config,
                                   weight_name=WEIGHT_NAME)
    ours = lora_to_bytes(layers, config)
    written = (tmp_path / WEIGHT_NAME).read_bytes()
    assert split_file(ours) == split_file(written)

    theirs, metadata = FluxPipeline.lora_state_dict(tmp_path, weight_name=WEIGHT_NAME,
                                                    return_lora_metadata=True)
    lora = read_lora(ours)
    assert lora.metadata == metadata and lora.state_dict.keys() == theirs.keys()
    assert all(torch.equal(lora.state_dict[k], theirs[k]) for k in theirs)
    assert lora.rank == 8 and metadata["transformer.r"] == 8


def split_file(data: bytes) -> tuple[dict, bytes]:
    """A safetensors file as its parsed header (metadata values parsed too) and tensor bytes."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header["__metadata__"] = {k: json.loads(v) if k == "lora_adapter_metadata" else v
                              for k, v in header["__metadata__"].items()}
    return header, data[8 + length:]


def test_a_lora_loads_from_bytes_with_its_alpha():
    """The adapter config travels with the bytes: an alpha of twice the rank doubles the
    LoRA's effect, exactly as loading the file through diffusers does."""
    pipeline = build_tiny_flux()
    data = random_lora_bytes(4, seed=2)
    lora = read_lora(data)
    doubled = lora_to_bytes(
        {k.removeprefix("transformer."): v for k, v in lora.state_dict.items()},
        {k.removeprefix("transformer."): v for k, v in lora.metadata.items()}
        | {"lora_alpha": 8})
    load_lora(pipeline, doubled, adapter_name="doubled")
    load_lora(pipeline, lora.scaled(2.0), adapter_name="scaled")
    config = pipeline.transformer.peft_config
    assert (config["doubled"].r, config["doubled"].lora_alpha) == (4, 8)
    inputs = torch.randn(1, 4, 32)
    attention = pipeline.transformer.transformer_blocks[0].attn.to_q
    outputs = {}
    for name in ("doubled", "scaled"):
        pipeline.set_adapters([name])
        outputs[name] = attention(inputs)
    assert torch.allclose(outputs["doubled"], outputs["scaled"], atol=1e-6)


def test_what_is_not_a_lora_is_refused():
    with pytest.raises(LoraFormatError, match="not a readable LoRA"):
        read_lora(b"not a lora")
    no_lora = safetensors.torch.save({"transformer.weight": torch.zeros(2)})
    with pytest.raises(LoraFormatError, match="no LoRA layers"):
        read_lora(no_lora)


def test_the_contract_repeats_the_kits_lora_numbers():
    """fluxkit owns the LoRA's numbers; contracts keep a copy (they import no ML code):
    the two must not drift, or the API would accept ranks the generator's slot cannot hold."""
    from contracts.training import LORA_TARGET_MODULES, MAX_LORA_RANK

    assert MAX_LORA_RANK == MAX_RANK
    assert LORA_TARGET_MODULES == TARGET_MODULES


def test_one_maximum_rank_for_the_whole_system():
    from contracts.training import MAX_LORA_RANK, StartTraining
    from gateway.routers.training import StartBody

    for model in (StartTraining, StartBody):
        limits = {type(m).__name__: m for m in model.model_fields["rank"].metadata}
        assert limits["Le"].le == MAX_LORA_RANK, model.__name__
    fields = {"job_id": "j1", "user_id": "u1", "model_id": "m1", "dataset_id": "d1",
              "trigger_word": "sks"}
    assert StartTraining(**fields, rank=MAX_LORA_RANK).rank == MAX_LORA_RANK
    with pytest.raises(ValueError, match="less than or equal to"):
        StartTraining(**fields, rank=MAX_LORA_RANK + 1)


# --- quantization, errors, names ----------------------------------------------------------


def test_weight_formats_take_either_spelling():
    assert [weights_of(n) for n in (None, "none", "int8", "qint8", "qfloat8")] == [
        "none", "none", "int8", "int8", "float8"]
    with pytest.raises(ValueError, match="unknown weights"):
        weights_of("int4")


def test_out_of_memory_becomes_the_one_readable_error():
    with (pytest.raises(OutOfGpuMemory, match="^ran out at 64 px$") as error,
          out_of_memory_as("ran out at 64 px")):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert isinstance(error.value.__cause__, torch.OutOfMemoryError)
    with pytest.raises(KeyError), out_of_memory_as("unused"):  # anything else passes through
        raise KeyError("x")


def test_base_model_names():
    assert base_model_name(None) == "tiny-random-flux-dev"
    assert base_model_name(None, "schnell") == "tiny-random-flux-schnell"
    assert base_model_name("black-forest-labs/FLUX.1-dev") == "black-forest-labs/FLUX.1-dev"
    with pytest.raises(ValueError, match="unknown FLUX model"):
        base_model_name(None, "pro")
    assert json.dumps(base_model_name(None))  # plain text for metadata
