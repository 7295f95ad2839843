"""The FLUX kit that trainer_service and generator_service share: plain ML code, no broker.

- `loading`: a FLUX pipeline from a hub id, a local folder, or the tiny offline FLUX
  (dev and schnell), and the names metadata gives them;
- `tiny`: the tiny random FLUX (real architecture, CPU-sized) and random LoRAs for it;
- `lora`: the LoRA file format, one way in and out as bytes, and the LoRA's numbers (the
  target modules, the largest rank; the API's schemas keep a copy, held equal by a test);
- `quantize`: optimum-quanto weight-only quantization that leaves LoRA layers alone;
- `placements`: the memory placements as one table, and the profiles built from them;
- `errors`: the one out-of-memory error.

It imports no service, no `terra` and no broker (tests/unit/test_import_rules.py), and
no message schema: the schemas describe the wire, the kit the model.
"""
