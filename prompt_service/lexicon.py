"""Word lists the analysis reads prompts with (English, plus the French the first users write).

Pure data. Multi-word terms are matched as phrases; the longest term wins.
"""

from __future__ import annotations


def word_set(words: str) -> frozenset[str]:
    """A set of words from one space-separated string (long lists stay readable)."""
    return frozenset(words.split())


STOP_WORDS = word_set(
    # English function words. Negations and numbers are content: they change the image.
    "a an the and or but of in on at to for from by with into onto over under above below "
    "as is are was were be been being it its this that these those there here his her hers "
    "him he she they them their theirs we our you your i me my mine myself itself "
    "some any each every very so such just also then than too which who whom whose what "
    "where when while has have having had do does did can could would should will shall "
    "may might must out up down off about around between through across behind beside near "
    "against along among within upon via per "
    # French
    "le la les un une des du de d l j qu et ou dans sur sous avec au aux en est sont pour par "
    "ce cet cette ces qui que quoi son sa ses leur leurs mon ma mes ton ta tes il elle ils "
    "elles on se s y à très plus entre vers devant derrière près chez "
    # Spanish, German, Italian (the common ones only)
    "el los las unos unas y con del al es muy por para sobre bajo su sus "
    "der die das ein eine einen und mit im auf unter von ist sehr dem den einem einer "
    "il lo gli uno e nel nella sul sulla di della dei delle molto per"
)

QUALITY = (
    "masterpiece", "best quality", "high quality", "highest quality", "top quality",
    "ultra quality", "amazing quality", "great quality", "very aesthetic", "absurdres",
    "highres", "high res", "hires", "high resolution", "ultra high res", "4k", "8k", "16k",
    "uhd", "hd", "hdr", "ultra detailed", "ultra-detailed", "highly detailed", "very detailed",
    "extremely detailed", "hyperdetailed", "hyper detailed", "detailed", "intricate details",
    "intricate detail", "intricate", "sharp focus", "award-winning", "award winning",
    "trending on artstation", "artstation", "professional", "fine detail", "crisp detail",
    "rich texture detail", "best aesthetic", "newest", "score 9", "score 8 up", "score 7 up",
    "score 8", "score 7", "raw photo", "official art", "quality", "qualité", "chef-d'œuvre",
    "chef d'oeuvre", "très détaillé", "détaillé", "détaillée",
)

STYLE = (
    "photo", "photograph", "photography", "photorealistic", "photo-realistic", "realistic",
    "hyperrealistic", "hyper-realistic", "hyperrealism", "realism", "portrait photograph",
    "portrait", "cinematic", "cinematic film still", "film still", "movie still", "anime",
    "anime illustration", "manga", "cartoon", "comic", "comic book", "comic book illustration",
    "graphic novel", "illustration", "digital art", "digital painting", "concept art",
    "fantasy concept art", "fantasy art", "oil painting", "oil on canvas", "acrylic painting",
    "painting", "watercolor", "watercolour", "watercolour painting", "watercolor painting",
    "gouache", "sketch", "pencil sketch", "pencil drawing", "charcoal drawing", "drawing",
    "ink drawing", "line art", "3d render", "3D render", "render", "octane render",
    "unreal engine", "blender", "cgi", "pixel art", "16-bit pixel art", "8-bit", "16-bit",
    "voxel art", "low poly", "vector art", "flat design", "studio ghibli", "ghibli", "pixar",
    "disney", "art nouveau", "impressionist", "impressionism", "surrealism", "surreal",
    "cyberpunk", "steampunk", "vaporwave", "synthwave", "polaroid", "analog film",
    "film photography", "film grain", "kodak portra", "fujifilm", "dslr", "ukiyo-e", "baroque",
    "pop art", "matte painting", "minimalist", "minimalism", "claymation", "stained glass", "papercraft",
    "sticker", "poster", "cel shading", "cel-shaded", "brushstrokes", "visible brushstrokes",
    "style", "aesthetic", "art style", "artwork", "aquarelle", "peinture", "peinture à l'huile",
    "dessin", "photographie", "rendu 3d", "bande dessinée", "réaliste", "croquis",
)

LIGHTING = (
    "lighting", "light", "lights", "lit", "backlit", "backlight", "backlighting", "rim light",
    "rim lighting", "sunlight", "moonlight", "candlelight", "candle light", "firelight",
    "daylight", "golden hour", "blue hour", "sunset", "sunrise", "dusk", "dawn", "twilight",
    "neon", "neon lights", "neon glow", "glow", "glowing", "shadows", "shadow", "hard shadows",
    "chiaroscuro", "chiaroscuro lighting", "volumetric light", "volumetric lighting",
    "volumetric", "god rays", "sunbeams", "light rays", "studio lighting", "softbox",
    "softbox lighting", "high key", "low key", "low-key", "high-key", "illuminated",
    "luminous", "global illumination", "three-point lighting", "shading", "soft shading",
    "strong shading", "side lighting", "lumière", "éclairage", "éclairé", "éclairée", "ombres",
    "ombre", "contre-jour", "lueur", "néon", "coucher de soleil", "lever de soleil", "aube",
    "crépuscule", "soleil couchant",
)

COMPOSITION = (
    "close-up", "closeup", "close up", "extreme close-up", "medium close-up", "macro",
    "wide shot", "wide-angle", "wide angle", "long shot", "medium shot", "full body",
    "full-body", "full body shot", "upper body", "cowboy shot", "headshot", "portrait shot",
    "profile", "side view", "front view", "back view", "aerial view", "aerial",
    "bird's-eye view", "birds eye view", "top-down", "top down view", "overhead",
    "low angle", "low angle shot", "high angle", "dutch angle", "eye level", "eye-level view",
    "pov", "first-person", "fisheye", "telephoto", "panorama", "panoramic", "symmetrical",
    "symmetry", "centered", "centred", "rule of thirds", "rule-of-thirds composition",
    "composition", "framing", "head-and-shoulders framing", "shot", "lens", "bokeh",
    "bokeh background", "depth of field", "shallow depth of field", "dof", "tilt-shift",
    "view", "angle", "dynamic angle", "perspective", "isometric", "isometric view",
    "three-quarter view", "anamorphic", "widescreen", "vignette", "solo", "gros plan",
    "plan large", "plan moyen", "vue aérienne", "vue de dessus", "contre-plongée", "plongée",
    "cadrage", "objectif", "profondeur de champ", "en pied",
)

MOOD = (
    "moody", "mood", "atmosphere", "atmospheric", "ambiance", "ambience", "vibe", "vibes",
    "serene", "calm", "peaceful", "tranquil", "dramatic", "melancholic", "melancholy", "sad",
    "happy", "joyful", "cheerful", "playful", "whimsical", "dreamy", "dreamlike", "ethereal",
    "mysterious", "eerie", "creepy", "spooky", "ominous", "gloomy", "cozy", "cosy",
    "romantic", "nostalgic", "epic", "majestic", "tense", "lonely", "hopeful", "energetic",
    "chaotic", "haunting", "magical", "dark", "grim", "surreal atmosphere", "calme",
    "paisible", "sereine", "serein", "mystérieux", "mystérieuse", "sombre", "joyeux",
    "joyeuse", "mélancolique", "romantique", "chaleureux", "chaleureuse", "atmosphère",
    "onirique", "triste", "inquiétant", "inquiétante",
)

COLOUR = (
    "red", "blue", "green", "yellow", "orange", "purple", "violet", "pink", "black", "white",
    "grey", "gray", "brown", "gold", "silver", "teal", "cyan", "magenta", "turquoise", "beige",
    "crimson", "scarlet", "navy", "emerald", "amber", "pastel", "pastel colors",
    "pastel colours", "monochrome", "monochromatic", "black and white", "sepia", "vibrant",
    "vivid", "muted", "desaturated", "saturated", "colorful", "colourful", "colors", "colours",
    "color", "colour", "palette", "color palette", "colour palette", "limited palette", "tones",
    "hues", "color grading", "colour grading", "teal and orange", "rouge", "bleu", "bleue",
    "vert", "verte", "jaune", "noir", "noire", "blanc", "blanche", "rose", "gris", "grise",
    "doré", "dorée", "couleurs", "tons", "pastels",
)

SETTING_NOUNS = (
    "forest", "woods", "jungle", "city", "street", "alley", "beach", "ocean", "sea", "lake",
    "river", "mountain", "mountains", "desert", "field", "meadow", "garden", "park", "room",
    "bedroom", "kitchen", "living room", "office", "studio", "cafe", "café", "restaurant",
    "bar", "library", "castle", "temple", "church", "village", "town", "countryside", "space",
    "outer space", "underwater", "sky", "clouds", "background", "landscape", "cityscape",
    "interior", "indoors", "outdoors", "moon", "planet", "spaceship", "station", "market",
    "shop", "school", "classroom", "bridge", "road", "harbor", "harbour", "island", "cave",
    "ruins", "rooftop", "balcony", "valley", "hill", "hills", "snow", "rain", "night",
    "winter", "autumn", "spring", "summer", "tokyo", "paris", "london", "new york", "stage",
    "arena", "house", "cabin", "hall", "corridor", "museum", "train", "subway", "airport",
    "swamp", "waterfall", "canyon", "glacier", "volcano", "orchard", "farm", "port",
    "forêt", "ville", "rue", "plage", "mer", "océan", "lac", "montagne", "désert", "champ",
    "jardin", "parc", "chambre", "cuisine", "salon", "bureau", "bibliothèque", "château",
    "campagne", "espace", "ciel", "nuit", "fond", "pluie", "neige", "marché", "pont",
)

# Prepositions that open a place ("in a forest", "dans une forêt").
SETTING_PREPOSITIONS = (
    "in", "at", "on", "inside", "under", "beneath", "near", "by", "beside", "across",
    "through", "over", "among", "against", "atop", "outside", "dans", "sur", "sous", "à",
    "au", "près", "devant", "en", "en el", "en la", "im", "auf", "nel", "nella", "sulla",
)

ACTION_VERBS = (
    "sits", "stands", "walks", "runs", "holds", "looks", "smiles", "jumps", "flies", "dances",
    "reads", "eats", "drinks", "plays", "rides", "sleeps", "swims", "fights", "leans",
    "looking at viewer", "assis", "assise", "debout", "allongé", "allongée", "dort", "mange",
    "marche", "court", "lit", "joue", "danse", "vole", "nage", "sourit", "regarde", "tient",
    "sentado", "sentada", "sitzt", "seduto", "seduta",
)
# "-ing" words that are not actions (nouns and adjectives).
NOT_ACTIONS = word_set(
    "building buildings clothing ring king morning evening painting lighting ceiling string "
    "wedding thing nothing something anything everything spring wing sibling pudding bring "
    "during darling earring stocking icing railing landing frosting awning setting crossing "
    "opening offering filling sling viking ming ling bling sterling herring lightning coating "
    "bedding padding housing parking shopping dining living amazing stunning interesting "
    "charming striking glowing flowing dazzling breathtaking inviting captivating fascinating "
    "sparkling shining towering sprawling rolling winding trailing matching missing boring "
    "exciting relaxing calming soothing terrifying menacing haunting enchanting everlasting "
    "ongoing upcoming outstanding cunning loving caring shading framing rendering "
    "sing thing being beijing ping ding zing wring swing"
)

PERSON_NOUNS = (
    "woman", "man", "person", "girl", "boy", "lady", "guy", "gentleman", "child", "kid",
    "teenager", "adult", "businessman", "businesswoman", "self-portrait", "selfie", "femme",
    "homme", "personne", "fille", "garçon", "enfant", "mujer", "hombre", "frau", "mann",
    "donna", "uomo",
)
ROLE_NOUNS = (
    "astronaut", "knight", "warrior", "chef", "wizard", "witch", "superhero", "pilot", "doctor",
    "soldier", "king", "queen", "princess", "prince", "viking", "samurai", "ninja", "pirate",
    "cowboy", "detective", "explorer", "scientist", "musician", "dancer", "athlete", "model",
    "firefighter", "sailor", "monk", "elf", "vampire", "zombie", "robot", "cyborg", "hero",
    "astronaute", "chevalier", "guerrier", "sorcier", "sorcière", "pirate", "reine", "roi",
)

# Danbooru-style counts and their natural wording (a "reworded" change).
COUNT_TAGS = {
    "1girl": "a girl", "1boy": "a boy", "2girls": "two girls", "2boys": "two boys",
    "3girls": "three girls", "3boys": "three boys", "1other": "a figure",
    "multiple girls": "several girls", "multiple boys": "several boys",
}

EMOJI_WORDS = {
    "🐱": "cat", "🐈": "cat", "🐶": "dog", "🐕": "dog", "🌅": "sunrise", "🌄": "sunrise",
    "🌇": "sunset", "🌃": "night city", "🌙": "moon", "🌕": "full moon", "⭐": "star",
    "🌟": "glowing star", "✨": "sparkles", "🔥": "fire", "🌊": "ocean wave", "🌸": "cherry blossom",
    "🌹": "rose", "🌻": "sunflower", "🌲": "pine tree", "🌳": "tree", "🏔": "snowy mountain",
    "⛰": "mountain", "🏖": "beach", "🏝": "island", "🏙": "city skyline", "🚀": "rocket",
    "🚗": "car", "🏰": "castle", "🐉": "dragon", "🦄": "unicorn", "🦊": "fox", "🐼": "panda",
    "🐻": "bear", "🦁": "lion", "🐯": "tiger", "🐦": "bird", "🦋": "butterfly", "🍕": "pizza",
    "☕": "coffee", "🍰": "cake", "🎸": "guitar", "📚": "books", "🌧": "rain", "❄": "snow",
    "☀": "sun", "🌈": "rainbow", "❤": "red heart", "💀": "skull", "👑": "crown", "🤖": "robot",
    "👻": "ghost", "🎃": "pumpkin", "🍄": "mushroom", "🌵": "cactus", "🐟": "fish", "🐙": "octopus",
}
