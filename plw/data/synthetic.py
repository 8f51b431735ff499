"""Built-in synthetic instruction data, written by plw itself (no downloads).

Short-completion tasks (answer shorter than the prompt): arithmetic, list maxima, word counts,
sentiment and topic classification, last-word extraction. Long-completion tasks (answer longer
than the prompt): counting runs, multiplication tables, spelling out, templated stories, step
lists, item descriptions. Every record is a pure function of (seed, index), so the data are
deterministic and `generate(n)` is a prefix of `generate(n + k)`.
"""

from __future__ import annotations

import random

from plw.data.schema import Record

_ADJ = ["brave", "curious", "sleepy", "clever", "tiny", "grumpy", "cheerful", "quiet", "restless", "gentle"]
_ANIMALS = ["fox", "owl", "turtle", "rabbit", "otter", "crow", "cat", "badger", "goat", "heron"]
_GOALS = ["wanted to see the sea", "lost a red button", "learned to count stars", "built a small boat",
          "was afraid of the dark", "found a hidden garden", "planned a surprise party", "missed the last train"]
_PLACES = ["a windy hill", "an old library", "a busy harbour", "a quiet forest", "a snowy village", "a desert town"]
_FRIENDS = ["a wise old tortoise", "a noisy parrot", "a kind baker", "a lost puppy", "a travelling musician"]
_ENDINGS = ["Everyone agreed it was the best day of the year.", "From then on, nothing seemed quite so difficult.",
            "And that is why the hill is still called by that name.", "The stars seemed brighter that night."]
_POS = ["wonderful", "delightful", "excellent", "lovely", "fantastic", "pleasant"]
_NEG = ["terrible", "awful", "disappointing", "dreadful", "boring", "unpleasant"]
_THINGS = ["film", "meal", "trip", "concert", "book", "hotel", "game", "lesson"]
_TOPICS = {
    "sports": ["The striker scored twice before half time", "The team trained hard for the final match",
               "She won the marathon in record time", "The referee stopped the game after the foul"],
    "science": ["The telescope captured light from a distant galaxy", "Cells divide to repair damaged tissue",
                "The experiment measured how fast ice melts in salt water", "Electrons orbit the nucleus of an atom"],
    "food": ["Slow-roasted tomatoes make the soup taste sweeter", "The bakery sells fresh bread every morning",
             "Add the garlic once the onions turn golden", "The curry was served with rice and lime pickle"],
    "travel": ["The night train crosses three borders before dawn", "Pack light if you plan to hike between villages",
               "The ferry to the island leaves every two hours", "Our flight landed just as the sun rose"],
}
_WORDS = ["elephant", "computer", "notebook", "mountain", "keyboard", "sunflower", "umbrella", "library",
          "telescope", "pineapple", "butterfly", "adventure", "chocolate", "harmonica"]
_CHORES = {
    "make a cup of tea": ["Fill the kettle with fresh water", "Boil the water", "Put a tea bag in a cup",
                          "Pour the hot water over the tea bag", "Wait three to five minutes",
                          "Remove the tea bag", "Add milk or sugar if you like"],
    "plant a seed": ["Choose a small pot with drainage holes", "Fill it with moist compost",
                     "Press the seed gently into the soil", "Cover it with a thin layer of compost",
                     "Place the pot somewhere warm and bright", "Water it whenever the soil feels dry"],
    "wash a bicycle": ["Rinse off loose dirt with water", "Scrub the frame with soapy water",
                       "Clean the chain with a brush", "Rinse everything again", "Dry the bike with a cloth",
                       "Oil the chain lightly"],
    "write a letter": ["Decide who the letter is for", "Write the date and a greeting",
                       "Explain why you are writing", "Add the details in short paragraphs",
                       "Close with a friendly sentence", "Sign your name"],
}
_CATEGORY_ITEMS = {
    "fruits": ["apple", "banana", "cherry", "mango", "pear", "plum", "kiwi", "grape"],
    "tools": ["hammer", "saw", "wrench", "screwdriver", "chisel", "drill", "pliers", "level"],
    "instruments": ["violin", "piano", "flute", "drum", "trumpet", "cello", "guitar", "harp"],
}
_QUALITIES = ["is easy to recognise", "is useful in many situations", "comes in several varieties",
              "has been known for centuries", "is popular all over the world", "needs a little care"]


def _sentence(rng: random.Random, words: int) -> list[str]:
    pool = ["the", "a", "small", "river", "quickly", "green", "house", "runs", "near", "old", "bright",
            "morning", "walks", "over", "friendly", "town", "slowly", "blue", "garden", "sings"]
    return [rng.choice(pool) for _ in range(words)]


# ---- short-completion tasks: (instruction, input, output) ----

def _sum(rng):
    nums = [rng.randint(1, 99) for _ in range(rng.randint(3, 8))]
    return "Add the numbers in the input and give only the total.", ", ".join(map(str, nums)), str(sum(nums))


def _max(rng):
    nums = [rng.randint(-50, 200) for _ in range(rng.randint(4, 10))]
    return "Which number in the following list is the largest?", " ".join(map(str, nums)), str(max(nums))


def _count_words(rng):
    words = _sentence(rng, rng.randint(5, 16))
    return "How many words are in the following sentence?", " ".join(words).capitalize() + ".", str(len(words))


def _sentiment(rng):
    positive = rng.random() < 0.5
    adj = rng.choice(_POS if positive else _NEG)
    text = f"The {rng.choice(_THINGS)} was {adj}, and I would {'gladly' if positive else 'not'} do it again."
    return ("Classify the sentiment of the review as positive or negative.", text,
            "positive" if positive else "negative")


def _topic(rng):
    topic = rng.choice(sorted(_TOPICS))
    return ("Classify the topic of the text as sports, science, food or travel.",
            rng.choice(_TOPICS[topic]) + ".", topic)


def _last_word(rng):
    words = _sentence(rng, rng.randint(6, 14))
    return "Return the last word of the sentence.", " ".join(words) + ".", words[-1]


def _expression(rng):
    a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(1, 50)
    return f"Compute {a} * {b} - {c}. Answer with the number only.", "", str(a * b - c)


# ---- long-completion tasks ----

def _count_up(rng):
    start = rng.randint(1, 40)
    stop = start + rng.randint(15, 45)
    return (f"List the integers from {start} to {stop}, separated by commas.", "",
            ", ".join(str(i) for i in range(start, stop + 1)))


def _table(rng):
    n, upto = rng.randint(2, 19), rng.randint(8, 14)
    return (f"Write the multiplication table of {n} up to {upto}.", "",
            "\n".join(f"{n} x {k} = {n * k}" for k in range(1, upto + 1)))


def _spell(rng):
    word = rng.choice(_WORDS)
    lines = [f"{i}. {ch}" for i, ch in enumerate(word.upper(), start=1)]
    return (f"Spell the word '{word}' one letter per line, numbering the letters.", "",
            "\n".join(lines) + f"\nThe word '{word}' has {len(word)} letters.")


def _story(rng):
    adj, animal, goal = rng.choice(_ADJ), rng.choice(_ANIMALS), rng.choice(_GOALS)
    place, friend = rng.choice(_PLACES), rng.choice(_FRIENDS)
    sentences = [f"Once upon a time, in {place}, there lived a {adj} {animal} who {goal}.",
                 f"Every day the {animal} thought about it from morning until night.",
                 f"One afternoon the {animal} met {friend}.",
                 f"Together they made a plan and set off before sunrise.",
                 f"The journey was long, and more than once the {animal} wanted to turn back.",
                 f"But {friend} kept telling stories, and the hours passed quickly.",
                 rng.choice(_ENDINGS)]
    keep = sentences[:3] + rng.sample(sentences[3:6], rng.randint(1, 3)) + sentences[6:]
    return f"Write a short story about a {adj} {animal}.", "", " ".join(keep)


def _steps(rng):
    chore = rng.choice(sorted(_CHORES))
    steps = _CHORES[chore]
    return (f"Explain how to {chore}, step by step.", "",
            "\n".join(f"{i}. {s}." for i, s in enumerate(steps, start=1)))


def _describe(rng):
    category = rng.choice(sorted(_CATEGORY_ITEMS))
    items = rng.sample(_CATEGORY_ITEMS[category], rng.randint(3, 6))
    lines = [f"- {item.capitalize()}: the {item} {rng.choice(_QUALITIES)}." for item in items]
    return (f"Name some {category} and say one thing about each.", "",
            f"Here are {len(items)} {category}:\n" + "\n".join(lines))


SHORT_TASKS = (_sum, _max, _count_words, _sentiment, _topic, _last_word, _expression)
LONG_TASKS = (_count_up, _table, _spell, _story, _steps, _describe)


def generate(n: int, *, seed: int = 0, long_fraction: float = 0.5) -> list[Record]:
    """`n` Alpaca records; each is long-completion with probability `long_fraction`."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= long_fraction <= 1.0:
        raise ValueError("long_fraction must lie in [0, 1]")
    records = []
    for i in range(n):
        rng = random.Random(f"plw-synthetic:{seed}:{i}")  # str seeds hash deterministically
        tasks = LONG_TASKS if rng.random() < long_fraction else SHORT_TASKS
        instruction, inp, output = rng.choice(tasks)(rng)
        records.append(Record(instruction=instruction, input=inp, output=output, source=f"builtin:{seed}:{i + 1}"))
    return records
