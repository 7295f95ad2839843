"""The prompt optimiser's quality corpus: 65 hand-written prompts, one word to over 512 T5
tokens, French, tag soup, quotes, trigger words, emoji, as (prompt, style, trigger word).

Data for `bench.prompt_engine` and `tests/unit/test_prompt_corpus.py` (it lives here,
not in `tests/`, since nothing outside `tests/` imports `tests/`).
"""

from __future__ import annotations

LONG_PARAGRAPH = (
    "An old fisherman with a weathered face and a thick grey beard sits on an upturned "
    "wooden boat on a pebble beach, mending a tangled green net with his calloused hands. "
    "Behind him, small houses with peeling blue shutters climb the hillside, and gulls "
    "circle above the harbour. The sea is calm and silver under an overcast sky, and a "
    "lighthouse stands at the end of the stone pier."
)
VERY_LONG = " ".join(
    f"In room {n} of the museum there is a marble statue of a dancer, a bronze horse, "
    f"a faded tapestry showing a hunting scene, and a glass case full of antique coins."
    for n in range(1, 16)
)
FRENCH_LONG = (
    "Une vieille librairie parisienne remplie de livres anciens, avec une échelle en bois "
    "contre les étagères, un chat endormi sur le comptoir et la pluie qui coule sur la "
    "vitrine. Ambiance chaleureuse, lumière dorée des lampes."
)

# (prompt, style preset, trigger word)
CORPUS: list[tuple[str, str | None, str | None]] = [
    # one word, very short
    ("cat", None, None),
    ("dragon", "fantasy_art", None),
    ("sunset", None, None),
    ("portrait", "portrait", None),
    ("robot", "pixel_art", None),
    ("a lighthouse", None, None),
    ("me", None, "TOK"),
    # natural sentences
    ("A photo of a cat sitting on a red chair in a kitchen, warm morning light, 35mm",
     "photo", None),
    ("a lone astronaut walking across a red desert on Mars", "cinematic", None),
    ("A cozy cabin in a snowy forest at night with smoke rising from the chimney", None, None),
    ("two children flying a kite on a windy hill", "watercolour", None),
    ("a bowl of ramen on a wooden table, steam rising, close-up", None, None),
    ("A busy market street in Marrakesh with colourful spices and lanterns", None, None),
    ("an elderly woman reading a book by the window", "oil_painting", None),
    ("a red sports car parked on a rainy street in Tokyo at night", "3d_render", None),
    ("a street with no cars and a sign that says no parking", None, None),
    # long paragraphs, very long
    (LONG_PARAGRAPH, None, None),
    (LONG_PARAGRAPH, "cinematic", "TOK"),
    (VERY_LONG, None, None),
    (VERY_LONG, "photo", "sks"),
    # French (and other languages)
    ("un chat roux assis sur une chaise dans une cuisine, lumière douce", None, None),
    ("une femme qui marche sous la pluie à Paris, la nuit", "cinematic", None),
    ("un château médiéval sur une colline au coucher de soleil", None, None),
    ("portrait d'un vieil homme avec une barbe blanche, éclairage dramatique", None, "TOK"),
    ("un dragon rouge qui vole au-dessus d'une forêt, style aquarelle", None, None),
    ("une plage déserte avec des palmiers et une mer turquoise", "photo", None),
    (FRENCH_LONG, None, None),
    ("un robot et un enfant dans un jardin, dessin au crayon", "sketch", None),
    ("un perro pequeño con un sombrero rojo en la playa", None, None),
    ("eine alte Frau mit einem roten Schal im Wald", None, None),
    ("un gatto nero seduto sulla finestra di una casa", None, None),
    # quoted text to render
    ('a neon sign that says "OPEN 24/7" on a rainy street at night --ar 16:9 --v 6',
     "cinematic", None),
    ('a coffee shop chalkboard with the words "Fresh Croissants" written in white chalk',
     None, None),
    ('poster, bold title “THE LAST SUMMER”, retro typography, sunset colours', None, None),
    ('a birthday cake with "Happy 30th, Léa!" in pink icing', None, None),
    ('a T-shirt design with the text "no bad days" and a cartoon sun', "comic", None),
    ('un panneau en bois avec « Bienvenue au camping » écrit dessus', None, None),
    # trigger word, with and without
    ("a man in a suit standing on a rooftop at sunset", "photo", "TOK"),
    ("a photo of TOK person hiking in the mountains", None, "TOK"),
    ("a knight in shining armor on a horse", "oil_painting", "ohwx"),
    ("ohwx, 1boy, suit, city street, night", None, "ohwx"),
    ("a woman with TOK and TOK", None, "TOK"),
    ("a cup of tea on a windowsill", None, "TOK"),
    ("close-up portrait of sks woman smiling, natural light", "portrait", "sks"),
    ("an astronaut floating in space, earth in the background", None, "zwx_man"),
    # tag soup with weights
    (("masterpiece, best quality, 1girl, red hair, (detailed eyes:1.3), smiling, "
     "forest background, anime style"), None, None),
    (("(masterpiece:1.2), ((best quality)), 8k, highres, 1boy, solo, black jacket, "
     "[city lights], night, rain"), None, None),
    ("cyberpunk city, neon lights, {flying cars}, rain, (reflections:1.4), wide shot",
     None, None),
    ("portrait, woman, freckles, green eyes, soft lighting, bokeh, 85mm, film grain",
     "portrait", "TOK"),
    ("landscape, mountains, lake, sunrise, mist, pine trees, highly detailed, 4k",
     None, None),
    (("1girl, solo, long_hair, looking_at_viewer, school_uniform, cherry_blossoms, "
     "upper_body, masterpiece"), "anime", None),
    ("cat:: dog::2 friends, cartoon", None, None),
    (("a castle <lora:fantasyCastle:0.8> on a cliff, epic, dramatic sky, BREAK, "
     "matte painting"), None, None),
    # Midjourney flags, negative prompts, metadata
    ("a vintage car in Havana --ar 3:2 --style raw --stylize 250 --no people, text",
     None, None),
    (("portrait of a woman, cinematic lighting\nNegative prompt: blurry, ugly, deformed\n"
     "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234"), None, "TOK"),
    ("a bowl of fruit on a table, still life. negative: lowres, bad anatomy", None, None),
    # emoji
    ("cat 🐱 on the moon 🌙", None, None),
    ("🔥🐉 dragon breathing fire over a castle 🏰", "fantasy_art", None),
    ("a happy dog at the beach 🏖 ☀️ 🫠", None, None),
    ("🌸", None, None),
    # nonsense and odd input
    ("asdf qwerty zxcv", "pixel_art", None),
    ("blorf the glimmering snarfwidget of zorp", None, None),
    ("!!! ??? ...", None, None),
    ("42", None, None),
    ("A A A A A cat cat cat", None, None),
]

