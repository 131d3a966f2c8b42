"""Spoken requests of the kinds people ask an assistant, generated from templates and typed slot lists.

The base set has six kinds: `facts`, `howto`, `advice`, `creative`, `smalltalk`, `practical`; the `everyday` set
(`everyday.py`) eleven others and the `general` set (`general.py`) twelve more (`TEMPLATE_SETS`). Every template
takes only slots of the right type (a country where a country belongs), so the requests read naturally.
Multi-turn conversations add a follow-up turn drawn from generic follow-ups ("Can you give me an example?") and,
in the base set, slot-aware ones ("What about Peru?").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from llasm.training.datagen import everyday, general
from llasm.training.datagen.text import norm_key, text_is_eval

SLOTS: dict[str, list[str]] = {
    "country": "France Japan Brazil Canada Egypt India Mexico Kenya Norway Peru Italy Spain Germany Chile "
    "Vietnam Greece Portugal Argentina Morocco Iceland Turkey Thailand Ireland Poland Sweden Nigeria Australia "
    "Indonesia Switzerland Colombia".split(),
    "city": "Paris Tokyo London Rome Sydney Cairo Toronto Berlin Lisbon Seoul Istanbul Chicago Barcelona "
    "Vienna Prague Mumbai Bangkok Dublin Amsterdam Boston".split(),
    "animal": "dolphins elephants octopuses bees penguins owls wolves cats dogs horses bats ants whales "
    "crows sharks frogs koalas camels parrots turtles".split(),
    "planet": ["Mars", "Venus", "Jupiter", "Saturn", "Mercury", "Neptune", "Uranus", "the Moon"],
    "concept": ["photosynthesis", "gravity", "inflation", "democracy", "evolution", "climate change",
                "the immune system", "machine learning", "electricity", "the water cycle", "compound interest",
                "black holes", "vaccines", "the stock market", "plate tectonics", "DNA", "the internet",
                "nuclear energy", "the greenhouse effect", "supply and demand", "blockchain", "sleep",
                "memory", "the placebo effect", "recycling", "solar power", "antibiotics", "tides",
                "rainbows", "earthquakes"],
    "invention": ["the printing press", "the telephone", "the light bulb", "the airplane", "the bicycle",
                  "the refrigerator", "the compass", "the steam engine", "the microwave oven", "the radio",
                  "the camera", "the computer mouse", "paper money", "the clock", "glasses"],
    "task": ["bake bread", "change a flat tire", "start running", "learn to swim", "write a resume",
             "plant tomatoes", "clean a cast iron pan", "make a budget", "learn a new language",
             "fall asleep faster", "tie a tie", "make pancakes", "save money on groceries", "fix a leaky faucet",
             "start a vegetable garden", "brew good coffee", "prepare for a job interview", "remove a coffee stain",
             "improve my handwriting", "train a puppy", "organize my closet", "cook rice", "paint a room",
             "take better photos with my phone", "back up my computer", "make a paper airplane",
             "memorize a speech", "learn to juggle", "wash a wool sweater", "make a cup of tea",
             "write a thank you note", "meditate", "build a birdhouse", "negotiate a salary",
             "choose a good password", "keep houseplants alive", "make a smoothie", "stretch after a run",
             "study for an exam", "boil an egg"],
    "situation": ["I can't sleep at night", "I feel stressed at work", "I'm nervous about a presentation",
                  "my friend is upset with me", "I keep procrastinating", "I want to eat healthier",
                  "I'm moving to a new city", "I have too many meetings", "I forgot my friend's birthday",
                  "I want to save for a vacation", "my neighbor is too loud", "I feel lonely lately",
                  "I'm starting a new job on Monday", "I get distracted by my phone", "I want to read more books",
                  "my back hurts from sitting all day", "I have an exam next week", "I want to exercise more",
                  "I'm bored on weekends", "I spend too much money on takeout"],
    "skill": ["public speaking", "chess", "cooking", "drawing", "writing", "playing the guitar", "time management",
              "photography", "listening", "negotiating", "typing", "singing", "remembering names", "dancing",
              "mental math", "gardening", "running", "swimming", "knitting", "programming"],
    "subject": ["the ocean", "autumn leaves", "a rainy morning", "a lost cat", "the city at night", "friendship",
                "a cup of coffee", "the first snow", "a lighthouse", "an old bicycle", "the moon", "a busy train station",
                "summer holidays", "a small robot", "a garden in spring", "the mountains", "a birthday party",
                "a quiet library", "the desert", "a thunderstorm"],
    "character": ["a brave mouse", "a lonely robot", "a curious girl", "an old fisherman", "a clumsy dragon",
                  "a talking tree", "a young wizard", "a shy giraffe", "a retired astronaut", "a lost puppy"],
    "event": ["finds a secret door", "learns to fly", "makes a new friend", "gets lost in the forest",
              "wins a baking contest", "discovers a hidden treasure", "travels back in time", "saves the village"],
    "food": ["pizza", "sushi", "tacos", "lasagna", "pancakes", "curry", "soup", "salad", "ice cream", "bread",
             "chocolate cake", "fried rice", "omelettes", "hummus", "dumplings"],
    "thing": ["a rainbow", "a refrigerator", "an airplane", "a microwave", "a battery", "a compass", "a vaccine",
              "a thermostat", "a touch screen", "a solar panel", "an elevator", "a bicycle gear", "a camera",
              "a hearing aid", "a lock and key", "wifi", "GPS", "a car engine", "a light bulb", "a submarine"],
    "person": ["Albert Einstein", "Marie Curie", "Leonardo da Vinci", "Shakespeare", "Cleopatra",
               "Isaac Newton", "Ada Lovelace", "Nelson Mandela", "Mozart", "Charles Darwin", "Frida Kahlo",
               "Galileo", "Abraham Lincoln", "Jane Austen", "Confucius"],
    "hobby": ["reading", "hiking", "cooking", "painting", "board games", "music", "movies", "travel",
              "gardening", "photography", "cycling", "video games"],
    "occasion": ["my mom's birthday", "a wedding", "a housewarming party", "a colleague who is leaving",
                 "a friend who got a new job", "an anniversary", "a graduation", "a baby shower"],
    "pet": ["dog", "cat", "goldfish", "hamster", "rabbit", "parrot", "turtle"],
    "business": ["bakery", "coffee shop", "bookstore", "bike repair shop", "flower shop", "food truck",
                 "yoga studio", "pet grooming salon"],
    "profession": ["nurse", "pilot", "architect", "plumber", "librarian", "data scientist", "firefighter",
                   "pharmacist", "electrician", "veterinarian", "journalist", "translator", "chef", "judge"],
    "ingredients": ["eggs and spinach", "rice and beans", "potatoes and cheese", "chicken and lemon",
                    "pasta and tomatoes", "bananas and oats", "tofu and broccoli", "apples and cinnamon"],
}

TEMPLATES: dict[str, list[str]] = {
    "facts": [
        "What is the capital of {country}?", "What language do people speak in {country}?",
        "What is {country} famous for?", "Tell me an interesting fact about {country}.",
        "What's the population of {city}, roughly?", "What should I see in {city}?",
        "How do {animal} communicate?", "How long do {animal} usually live?", "What do {animal} eat?",
        "Why are {animal} important for nature?", "How far is {planet} from the Sun?",
        "Could people ever live on {planet}?", "What is {planet} made of?", "Can you explain {concept} simply?",
        "What is {concept}?", "How does {concept} work?", "Why does {concept} matter?",
        "Explain {concept} to a ten year old.", "Who invented {invention}?", "When was {invention} invented?",
        "How did {invention} change the world?", "How does {thing} work?", "Who was {person}?",
        "What is {person} best known for?", "Tell me three facts about {person}.",
        "What does a {profession} do all day?", "How do you become a {profession}?",
        "What's the difference between {concept} and {concept2}?", "How is {country} different from {country2}?",
        "Which is bigger, {country} or {country2}?", "What's the time difference between {city} and {city2}?",
        "How long is a flight from {city} to {city2}?", "How are {animal} different from {animal2}?",
        "Which is closer to us, {planet} or {planet2}?", "Is {city} more expensive than {city2}?",
        "What is the weather usually like in {city} in winter?", "What's a traditional dish from {country}?",
    ],
    "howto": [
        "How do I {task}?", "What's the best way to {task}?", "Can you explain how to {task}?",
        "Give me simple steps to {task}.", "I want to {task}. Where do I start?",
        "What do I need to {task}?", "What mistakes should I avoid when I {task}?",
        "How long does it take to {task}?", "Is it hard to {task}?", "Can you teach me how to {task}?",
        "What's the quickest way to {task}?", "Which should I learn first: how to {task} or how to {task2}?",
    ],
    "advice": [
        "{situation}. What should I do?", "{situation}. Any advice?", "{situation}. Can you help me?",
        "How can I get better at {skill}?", "Any tips for a beginner in {skill}?",
        "What's a good daily routine to practice {skill}?", "Is {skill} worth learning as an adult?",
        "What should I get for {occasion}?", "What should I say in a card for {occasion}?",
        "Should I get a {pet} if I live in a small apartment?", "How do I take care of a {pet}?",
    ],
    "creative": [
        "Write a short poem about {subject}.", "Write a haiku about {subject}.",
        "Tell me a short story about {character} who {event}.", "Give me a name for my new {pet}.",
        "Suggest a name for a {business}.", "Write a slogan for a {business}.",
        "Describe {subject} in three sentences.", "Write a limerick about {animal}.",
        "Give me an idea for a story about {character}.", "Write a short toast for {occasion}.",
        "Invent a recipe with {ingredients}.", "Make up a riddle about {thing}.",
    ],
    "smalltalk": [
        "Do you like {hobby}?", "What's your favorite kind of {food}?", "Tell me a joke about {animal}.",
        "Tell me something funny about {profession}s.", "What would you do on a day off in {city}?",
        "If you could visit {country}, what would you do first?", "Is eating {food} every week healthy?",
        "What do you think about {hobby} as a hobby?", "Can you recommend a good book about {concept}?",
        "I just got back from {city}. Have you heard of it?", "I love {animal}. Do you?",
        "What goes well with {food}?",
    ],
    "practical": [
        "What can I cook with {ingredients}?", "Plan a weekend trip to {city} for me.",
        "What should I pack for a week in {country}?", "What's a good weekly workout plan for a beginner?",
        "Help me plan a budget for a trip to {country}.", "What are some healthy snacks for work?",
        "How much water should I drink every day?", "How can I make my mornings less rushed?",
        "Give me a shopping list for making {food}.", "Make a study plan for learning about {concept}.",
        "How should I prepare for a trip to {city}?", "What's a quick dinner I can make with {ingredients}?",
    ],
}

FOLLOW_UPS_GENERIC = [
    "Can you give me an example?", "Why is that?", "Can you say that more simply?", "Tell me more.",
    "Can you make it shorter?", "What else should I know?", "Thanks! One more question: is that always true?",
    "Can you explain the first point again?", "How would that work in practice?", "Can you add one more?",
    "That's helpful. What would you suggest next?", "Could you summarise that in one sentence?",
]
FOLLOW_UPS_SLOT = {
    "country": ["What about {country2}?", "And how is it in {country2}?"],
    "city": ["What about {city2}?", "Is {city2} a better choice?"],
    "animal": ["What about {animal2}?", "And how are {animal2} different?"],
    "concept": ["How is that related to {concept2}?", "And what about {concept2}?"],
    "task": ["And how do I {task2}?", "Is that easier than learning to {task2}?"],
    "food": ["What about {food2}?", "Which is healthier, that or {food2}?"],
    "subject": ["Now write one about {subject2}.", "Can you do the same for {subject2}?"],
    "skill": ["And what about {skill2}?", "Which is easier to learn, that or {skill2}?"],
    "person": ["And who was {person2}?", "Did they ever meet {person2}?"],
}


# how people open a spoken request; most requests have no opener
OPENERS = ["Hey, ", "Quick question. ", "Excuse me, ", "Hi there. ", "I was wondering, ", "Okay, ", "So, ",
           "Hello! ", "Um, "]


@dataclass
class Request:
    """One conversation's user turns (1 or more) with its kind."""

    kind: str
    turns: list[str] = field(default_factory=list)
    core: str = ""  # the first turn without its opener: what the held-out text split is keyed on

    @property
    def held_out(self) -> bool:
        """In the stable held-out text split (`text.text_is_eval` of the core), whatever the opener."""
        return text_is_eval(self.core)


# the template sets `generate_requests` draws from: name -> (templates by kind, slot lists)
TEMPLATE_SETS: dict[str, tuple[dict[str, list[str]], dict[str, list[str]]]] = {
    "base": (TEMPLATES, SLOTS),
    "everyday": (everyday.TEMPLATES, everyday.SLOTS),
    "general": (general.TEMPLATES, general.SLOTS),
}


def _fill(template: str, rng: random.Random, slots: dict[str, list[str]], every_slot: bool
          ) -> tuple[str, dict[str, str]]:
    values: dict[str, str] = {}
    for slot, choices in slots.items():  # two different values a slot; the template uses some
        # the base set draws every slot whatever the template (its seeds depend on that); others only theirs
        if every_slot or "{" + slot + "}" in template or "{" + slot + "2}" in template:
            values[slot], values[slot + "2"] = rng.sample(choices, 2)
    text = template.format(**values)
    return text[0].upper() + text[1:], values


def _with_opener(text: str, opener: str, base: bool) -> str:
    """`opener` before `text`, its first letter lowered after a comma. The base set also lowers it after
    "Hello! " (kept so its seeds give the same texts); other sets keep the capital after any sentence end."""
    if base:
        keep = text.startswith(("I ", "I'", "Albert", "Marie")) or opener.endswith(". ")
    else:
        keep = text.startswith(("I ", "I'")) or opener.rstrip().endswith((".", "!", "?"))
    return opener + (text if keep else text[0].lower() + text[1:])


def generate_requests(count: int, *, seed: int = 0, multi_turn: float = 0.3, split: str | None = None,
                      templates: str = "base") -> list[Request]:
    """`count` conversations with distinct first turns; a `multi_turn` fraction gets a follow-up turn.

    `split` "train" or "eval" keeps only requests on that side of the held-out text split (`Request.held_out`),
    so a held-out question never reaches training, not even with another opener; "eval" requests also differ
    in more than their openers. `templates` names the template set (`TEMPLATE_SETS`)."""
    if split not in (None, "train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    if templates not in TEMPLATE_SETS:
        raise ValueError(f"templates must be one of {', '.join(TEMPLATE_SETS)}, not {templates!r}")
    base = templates == "base"
    by_kind, slots = TEMPLATE_SETS[templates]
    rng = random.Random(seed)
    kinds = sorted(by_kind)
    out: list[Request] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > (50 if split is None else 1000) * count + 1000:
            raise ValueError(f"only {len(out)} distinct requests can be generated, fewer than the {count} asked for")
        kind = kinds[len(out) % len(kinds)] if rng.random() < 0.5 else rng.choice(kinds)
        template = rng.choice(by_kind[kind])
        text, values = _fill(template, rng, slots, base)
        core = text
        if rng.random() < 0.4:
            text = _with_opener(text, rng.choice(OPENERS), base)
        key = norm_key(core if split == "eval" else text)  # a held-out set never asks one question twice
        if key in seen:
            continue
        seen.add(key)
        req = Request(kind, [text], core)
        if split is not None and req.held_out != (split == "eval"):
            continue
        if rng.random() < multi_turn:
            used = [s for s in FOLLOW_UPS_SLOT if "{" + s + "}" in template] if base else []  # base slot names
            if used and rng.random() < 0.6:
                follow = rng.choice(FOLLOW_UPS_SLOT[rng.choice(used)]).format(**values)
            else:
                follow = rng.choice(FOLLOW_UPS_GENERIC)
            req.turns.append(follow)
        out.append(req)
    return out


def count_distinct_requests(templates: str = "base") -> int:
    """How many distinct single-turn requests a template set can express (an upper bound for `count`)."""
    by_kind, slots = TEMPLATE_SETS[templates]
    total = 0
    for group in by_kind.values():
        for t in group:
            n = 1
            for slot, choices in slots.items():
                if "{" + slot + "}" in t:
                    n *= len(choices)
                if "{" + slot + "2}" in t:
                    n *= len(choices) - 1
            total += n
    return total * (1 + len(OPENERS))
