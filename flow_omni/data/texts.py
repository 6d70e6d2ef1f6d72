"""Built-in, seeded text for synthetic speech corpora: sentences, documents and spoken QA.

Nothing is downloaded: the word lists live in this file. Every generator takes a seed or a
``random.Random`` and is deterministic for it (``random.Random`` seeded with an int or a str is
stable across Python runs and platforms).

* :func:`generate_sentences` / :func:`generate_document`: sentences from a small template grammar
  (about 450 distinct words: nouns with plurals, past-tense verbs, adjectives, places, names,
  times, spelled-out numbers). Lowercase words, no digits, punctuation limited to ``. , ?``.
* :func:`generate_qa`: spoken questions with short (one- or two-word), checkable answers, in four categories:
  ``arithmetic`` (results 0–20), ``counting``, ``ordering`` (larger/smaller, day/month/number
  after/before) and ``fact`` (a fixed table of 30 facts).
* :func:`normalize_text` and :func:`score_answer`: how a spoken or typed answer is compared with
  the reference (see :func:`score_answer` for the exact rule).
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass

from flow_omni.errors import FlowOmniError

RngLike = random.Random | int | str | None


class TextGenerationError(FlowOmniError, ValueError):
    """A text generator was asked for something it cannot make (bad count, unknown category...)."""


def as_random(rng: RngLike) -> random.Random:
    """A ``random.Random`` from a seed (int or str), or the generator itself (shared state)."""
    if isinstance(rng, random.Random):
        return rng
    if rng is None or isinstance(rng, (int, str)) and not isinstance(rng, bool):
        return random.Random(rng if rng is not None else 0)
    raise TextGenerationError(f"expected a random.Random, an int or a str seed, got {type(rng).__name__}")


# ---- numbers ---------------------------------------------------------------------------------

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """0–100 as words, space-separated: ``42`` → ``"forty two"``, ``100`` → ``"one hundred"``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100:
        raise TextGenerationError(f"number_to_words handles integers 0-100, got {n!r}")
    if n < 20:
        return _ONES[n]
    if n == 100:
        return "one hundred"
    tens, ones = divmod(n, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]} {_ONES[ones]}"


#: "forty two" → 42 for 0–100 (what :func:`words_to_number` understands).
WORD_NUMBERS: dict[str, int] = {number_to_words(i): i for i in range(101)}


def words_to_number(text: str) -> int | None:
    """Inverse of :func:`number_to_words` after normalisation; None if ``text`` is not one."""
    return WORD_NUMBERS.get(normalize_text(text))


# ---- vocabulary ------------------------------------------------------------------------------

# (singular, plural) so number agreement is always right. Animate nouns can be subjects.
_ANIMATE = [
    tuple(p.split("/"))
    for p in """
cat/cats dog/dogs horse/horses cow/cows sheep/sheep goat/goats rabbit/rabbits mouse/mice
bird/birds duck/ducks fish/fish frog/frogs bear/bears fox/foxes wolf/wolves lion/lions
tiger/tigers monkey/monkeys elephant/elephants owl/owls bee/bees spider/spiders
child/children teacher/teachers farmer/farmers doctor/doctors baker/bakers driver/drivers
sailor/sailors singer/singers painter/painters student/students neighbour/neighbours
friend/friends brother/brothers sister/sisters king/kings queen/queens woman/women man/men
""".split()
]
_THINGS = [
    tuple(p.split("/"))
    for p in """
book/books letter/letters cup/cups plate/plates chair/chairs table/tables window/windows
door/doors box/boxes bag/bags hat/hats coat/coats shoe/shoes key/keys lamp/lamps clock/clocks
ball/balls kite/kites boat/boats train/trains bicycle/bicycles car/cars bus/buses
apple/apples orange/oranges lemon/lemons carrot/carrots potato/potatoes cake/cakes
egg/eggs sandwich/sandwiches flower/flowers tree/trees leaf/leaves stone/stones shell/shells
candle/candles blanket/blankets basket/baskets bottle/bottles pencil/pencils map/maps
song/songs story/stories picture/pictures drum/drums guitar/guitars
""".split()
]
_NOUNS = _ANIMATE + _THINGS
_ADJECTIVES = """
big small tall short old young new little happy sad quiet loud brave clever lazy busy
sleepy hungry friendly gentle kind angry tired funny strange famous red blue green yellow
white black brown orange purple grey golden silver wooden heavy light warm cold wet dry
bright dark clean dirty soft shiny round tiny huge fast slow noisy lucky careful curious
""".split()
# (past tense, takes an object)
_TRANSITIVE = """
found saw carried painted cleaned opened closed dropped lifted pushed pulled watched followed
visited chased washed bought sold built fixed moved hid caught threw kicked borrowed
remembered forgot counted drew wrapped packed filled emptied touched noticed liked
""".split()
_INTRANSITIVE = """
slept laughed smiled waited sang danced jumped walked ran swam worked played rested shouted
listened cried wandered whistled hurried stayed arrived left returned called answered
""".split()
_ADVERBS = """
quickly slowly quietly loudly happily sadly carefully gently suddenly proudly calmly
patiently bravely softly together again early late
""".split()
_PLACES = """
garden kitchen park forest river village market station library school beach hill field
farm bridge harbour museum castle church shop cottage valley lake island street yard
meadow barn office hospital bakery playground
""".split()
_PREPOSITIONS = "in near behind under beside across".split()
_NAMES = """
anna ben clara david emma frank grace henry isla jack kate leo maria noah olivia peter rosa
sam tina victor william zoe lucy oscar ruby felix hannah tom alice george
""".split()
_TIMES = [
    "yesterday",
    "today",
    "last night",
    "this morning",
    "on sunday",
    "on monday",
    "in the evening",
    "at noon",
    "after lunch",
    "before dinner",
    "every day",
    "last week",
    "in the spring",
    "in the winter",
    "at midnight",
    "on friday",
    "in the afternoon",
    "after school",
]
_CONNECTIVES = ["and then", "but later", "so", "because", "while", "and"]

COLOURS = "red blue green yellow white black brown orange purple pink grey gold".split()
ANIMALS = "cat dog horse cow sheep goat rabbit mouse bird duck fish frog bear fox wolf lion".split()
FRUITS = "apple orange lemon banana pear plum cherry grape peach melon mango lime".split()
DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
MONTHS = ("january february march april may june july august september october november december").split()

#: (question, answer): answers are single lowercase words.
FACTS: tuple[tuple[str, str], ...] = (
    ("what colour is the sky", "blue"),
    ("what colour is grass", "green"),
    ("what colour is snow", "white"),
    ("what colour is a banana", "yellow"),
    ("what colour is coal", "black"),
    ("how many legs does a spider have", "eight"),
    ("how many legs does a dog have", "four"),
    ("how many legs does a bird have", "two"),
    ("how many days are in a week", "seven"),
    ("how many months are in a year", "twelve"),
    ("how many wheels does a bicycle have", "two"),
    ("how many hours are in a day", "twenty four"),
    ("how many sides does a triangle have", "three"),
    ("how many fingers are on one hand", "five"),
    ("what animal says moo", "cow"),
    ("what animal says woof", "dog"),
    ("what animal says meow", "cat"),
    ("what animal says quack", "duck"),
    ("what do bees make", "honey"),
    ("what is frozen water called", "ice"),
    ("what is the opposite of hot", "cold"),
    ("what is the opposite of up", "down"),
    ("what is the opposite of big", "small"),
    ("what is the opposite of day", "night"),
    ("which season comes after winter", "spring"),
    ("which season comes after summer", "autumn"),
    ("what do we use to see", "eyes"),
    ("what do we use to hear", "ears"),
    ("what shines in the sky during the day", "sun"),
    ("what shines in the sky at night", "moon"),
)

QA_CATEGORIES = ("arithmetic", "counting", "ordering", "fact")


# ---- sentences -------------------------------------------------------------------------------


def _noun_phrase(
    rng: random.Random, plural: bool = False, adjective_p: float = 0.5, nouns: list[tuple[str, ...]] = _NOUNS
) -> str:
    sing, plur = rng.choice(nouns)
    adj = rng.choice(_ADJECTIVES) + " " if rng.random() < adjective_p else ""
    det = (
        rng.choice(["the", "the", "some", "those"]) if plural else rng.choice(["the", "the", "a", "my", "our", "that"])
    )
    if det == "a" and (adj or sing)[0] in "aeiou":
        det = "an"
    return f"{det} {adj}{plur if plural else sing}"


def _subject(rng: random.Random) -> str:
    if rng.random() < 0.35:
        return rng.choice(_NAMES)
    return _noun_phrase(rng, plural=rng.random() < 0.3, nouns=_ANIMATE)


def _place(rng: random.Random) -> str:
    return f"{rng.choice(_PREPOSITIONS)} the {rng.choice(_PLACES)}"


def _count(rng: random.Random) -> str:
    n = rng.randint(2, 99)
    return number_to_words(n)


def _clause(rng: random.Random) -> str:
    form = rng.randrange(6)
    if form == 0:
        return f"{_subject(rng)} {rng.choice(_TRANSITIVE)} {_noun_phrase(rng, plural=rng.random() < 0.3)} {_place(rng)}"
    if form == 1:
        return f"{_subject(rng)} {rng.choice(_INTRANSITIVE)} {rng.choice(_ADVERBS)} {rng.choice(_TIMES)}"
    if form == 2:
        return f"{_subject(rng)} {rng.choice(_TRANSITIVE)} {_count(rng)} {rng.choice(_NOUNS)[1]} {rng.choice(_TIMES)}"
    if form == 3:
        sing, plur = rng.choice(_NOUNS)
        return f"there were {_count(rng)} {rng.choice(_ADJECTIVES)} {plur} {_place(rng)}"
    if form == 4:
        return f"{_subject(rng)} {rng.choice(_INTRANSITIVE)} {_place(rng)}"
    first, second = rng.sample(_NAMES, 2)
    return f"{first} and {second} {rng.choice(_TRANSITIVE)} {_noun_phrase(rng)} {rng.choice(_TIMES)}"


def _question(rng: random.Random) -> str:
    form = rng.randrange(3)
    if form == 0:
        return f"did you see {_noun_phrase(rng)} {_place(rng)}?"
    if form == 1:
        return f"where did {rng.choice(_NAMES)} put {_noun_phrase(rng, adjective_p=0.7)}?"
    return f"why was {_noun_phrase(rng, adjective_p=0.0)} so {rng.choice(_ADJECTIVES)} {rng.choice(_TIMES)}?"


def random_sentence(rng: RngLike = None) -> str:
    """One sentence from the template grammar, e.g. ``"the sleepy fox found a kite near the lake."``."""
    rng = as_random(rng)
    r = rng.random()
    if r < 0.15:
        return _question(rng)
    if r < 0.45:
        first = _clause(rng)
        connective = rng.choice(_CONNECTIVES)
        comma = "," if connective not in ("and", "because", "while") else ""
        return f"{first}{comma} {connective} {_clause(rng)}."
    return f"{_clause(rng)}."


def generate_sentences(n: int, rng: RngLike = None, *, unique: bool = True) -> list[str]:
    """``n`` sentences; with ``unique`` no sentence repeats (the grammar has ~10^9 of them)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TextGenerationError(f"n must be a non-negative integer, got {n!r}")
    rng = as_random(rng)
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 20 * n + 100:
            raise TextGenerationError(f"could not draw {n} distinct sentences ({len(out)} after {attempts} tries)")
        s = random_sentence(rng)
        if unique and s in seen:
            continue
        seen.add(s)
        out.append(s)
    return out


def generate_document(rng: RngLike = None, n_sentences: int = 4) -> str:
    """A short multi-sentence document (sentences joined by single spaces)."""
    if isinstance(n_sentences, bool) or not isinstance(n_sentences, int) or n_sentences < 1:
        raise TextGenerationError(f"n_sentences must be a positive integer, got {n_sentences!r}")
    rng = as_random(rng)
    return " ".join(random_sentence(rng) for _ in range(n_sentences))


# ---- question answering ----------------------------------------------------------------------


@dataclass(frozen=True)
class QAItem:
    """A question with its reference answer (one or two lowercase words) and its category."""

    question: str
    answer: str
    category: str


def _arithmetic(rng: random.Random) -> QAItem:
    op = rng.choice(("plus", "minus", "times"))
    if op == "plus":
        total = rng.randint(0, 20)
        a = rng.randint(0, total)
        b, result = total - a, total
    elif op == "minus":
        a = rng.randint(0, 20)
        b = rng.randint(0, a)
        result = a - b
    else:
        while True:
            a, b = rng.randint(0, 10), rng.randint(0, 10)
            if a * b <= 20:
                break
        result = a * b
    return QAItem(f"what is {number_to_words(a)} {op} {number_to_words(b)}?", number_to_words(result), "arithmetic")


def _counting(rng: random.Random) -> QAItem:
    pool = rng.choice((COLOURS, ANIMALS, FRUITS))
    k = rng.randint(1, 7)
    words = rng.sample(pool, k)
    return QAItem(f"how many words are in {' '.join(words)}?", number_to_words(k), "counting")


def _ordering(rng: random.Random) -> QAItem:
    form = rng.randrange(5)
    if form in (0, 1):
        a, b = rng.sample(range(0, 21), 2)
        which = "larger" if form == 0 else "smaller"
        ans = max(a, b) if form == 0 else min(a, b)
        return QAItem(
            f"which is {which}, {number_to_words(a)} or {number_to_words(b)}?", number_to_words(ans), "ordering"
        )
    if form == 2:
        i = rng.randrange(7)
        if rng.random() < 0.5:
            return QAItem(f"what day comes after {DAYS[i]}?", DAYS[(i + 1) % 7], "ordering")
        return QAItem(f"what day comes before {DAYS[i]}?", DAYS[(i - 1) % 7], "ordering")
    if form == 3:
        i = rng.randrange(12)
        if rng.random() < 0.5:
            return QAItem(f"what month comes after {MONTHS[i]}?", MONTHS[(i + 1) % 12], "ordering")
        return QAItem(f"what month comes before {MONTHS[i]}?", MONTHS[(i - 1) % 12], "ordering")
    n = rng.randint(1, 19)
    if rng.random() < 0.5:
        return QAItem(f"what number comes after {number_to_words(n)}?", number_to_words(n + 1), "ordering")
    return QAItem(f"what number comes before {number_to_words(n)}?", number_to_words(n - 1), "ordering")


def _fact(rng: random.Random) -> QAItem:
    q, a = rng.choice(FACTS)
    return QAItem(q + "?", a, "fact")


_MAKERS = {"arithmetic": _arithmetic, "counting": _counting, "ordering": _ordering, "fact": _fact}


def random_qa(rng: RngLike = None, category: str | None = None) -> QAItem:
    """One QA item of ``category`` (default: drawn uniformly from :data:`QA_CATEGORIES`)."""
    rng = as_random(rng)
    if category is None:
        category = rng.choice(QA_CATEGORIES)
    if category not in _MAKERS:
        raise TextGenerationError(f"unknown QA category {category!r}; expected one of {list(QA_CATEGORIES)}")
    return _MAKERS[category](rng)


def generate_qa(n: int, rng: RngLike = None, categories: tuple[str, ...] | list[str] = QA_CATEGORIES) -> list[QAItem]:
    """``n`` QA items cycling through ``categories`` in order (balanced), each drawn from ``rng``.

    Items are drawn with replacement: the question space is finite (30 facts, 21 numbers), so a
    question may occur more than once; corpora speak each occurrence in its own voice.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TextGenerationError(f"n must be a non-negative integer, got {n!r}")
    categories = tuple(categories)
    if not categories:
        raise TextGenerationError("categories is empty; expected some of " + ", ".join(QA_CATEGORIES))
    for c in categories:
        if c not in _MAKERS:
            raise TextGenerationError(f"unknown QA category {c!r}; expected one of {list(QA_CATEGORIES)}")
    rng = as_random(rng)
    return [random_qa(rng, categories[i % len(categories)]) for i in range(n)]


# ---- normalisation and scoring ---------------------------------------------------------------

_NUMBER_RE = re.compile(r"\d+")
_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalize_text(text: str) -> str:
    """Lowercase, numbers 0–100 spelled out, apostrophes dropped, other punctuation → spaces.

    ``"It's 7!"`` → ``"its seven"``; ``"twenty-one"`` → ``"twenty one"``. Accents are stripped
    (NFKD). Numbers above 100 stay as digit strings.
    """
    if not isinstance(text, str):
        raise TextGenerationError(f"expected a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()

    def spell(m: re.Match) -> str:
        value = int(m.group())
        return f" {number_to_words(value)} " if value <= 100 else f" {m.group()} "

    text = _NUMBER_RE.sub(spell, text)
    text = _APOSTROPHES.sub("", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


#: Lead-in phrases that :func:`score_answer` ignores before the answer (after normalisation).
ANSWER_FILLERS: tuple[str, ...] = (
    "i think the answer is", "i think it is", "i think its", "i think", "i believe",
    "the answer is", "the answer", "answer", "the result is", "it is", "its", "it", "that is", "thats",
    "this is", "they are", "there are", "well", "so", "um", "uh", "oh", "okay", "ok",
    "the", "a", "an", "is",
)  # fmt: skip
_FILLER_TOKENS = sorted((tuple(f.split()) for f in ANSWER_FILLERS), key=len, reverse=True)


def strip_answer_fillers(tokens: list[str]) -> list[str]:
    """Repeatedly remove a leading filler phrase (longest match first) from normalised tokens."""
    changed = True
    while changed and tokens:
        changed = False
        for filler in _FILLER_TOKENS:
            if len(tokens) > len(filler) and tuple(tokens[: len(filler)]) == filler:
                tokens = tokens[len(filler) :]
                changed = True
                break
    return tokens


def score_answer(hypothesis: str, reference: str) -> bool:
    """True when ``hypothesis`` gives exactly the answer ``reference``.

    Rule: both are normalised (:func:`normalize_text`: case, punctuation and digits do not
    matter, so ``"7"`` equals ``"seven"``); then leading filler phrases from
    :data:`ANSWER_FILLERS` ("the answer is", "it's", "i think", "the", "um", ...) are stripped from
    the hypothesis, and what remains must equal the reference word for word. So "The answer is
    seven." and "It's 7" score True for "seven", while "seven or eight", "seventeen", "not seven",
    "seven please" and "" score False: content words besides the answer are never tolerated,
    since a model that lists several candidates, or negates one, has not answered.
    """
    ref = normalize_text(reference).split()
    if not ref:
        raise TextGenerationError(f"reference answer {reference!r} is empty after normalisation")
    hyp = normalize_text(hypothesis).split()
    return strip_answer_fillers(hyp) == ref or hyp == ref
