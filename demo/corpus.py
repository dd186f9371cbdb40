"""Seeded synthetic corpus for the bundled toy model.

Three task families echo behaviours studied on GPT-2 small; every task
instance is an :class:`Example` whose ``prompt`` stops right before the
expected next token(s) ``answer``:

* ``paren``   -- close an open bracket. Either an inline parenthetical whose
  content is complete (``"Copyright (C"`` -> ``")"``, ``"... [citation needed"``
  -> ``"]"``) or a sentence naming the opener (``"The list begins with ( and ends
  with"`` -> ``" )"``). Both ``()`` and ``[]`` occur, so the model has to remember
  which bracket was opened.
* ``acronym`` -- after ``"Foreign Direct Investment (F"`` continue with the
  remaining initials ``"DI"`` (2 to 4 capitalised words).
* ``ioi``     -- indirect object identification: ``"When Mary and John went to
  the store, John gave a drink to"`` -> ``" Mary"``.

Plain ``filler`` sentences (tag ``"filler"``) make up the rest of the corpus.

Controlled ambiguity: bracket and acronym documents sometimes continue with a
different but plausible token instead of the answer (``variant``): a
parenthetical that goes on (``"(born 1950, see page 3)"``), a frame closed with
the other bracket, ``"Copyright (C, 2001)"``, an acronym that skips a word
(``"(FI)"``) or, for two words, is just the initial (``"(F)"``). The rate is one
of :data:`AMBIGUITY_LEVELS`, fixed per template (frame, prefix or acronym
opener), so a calibrated model puts the answer's probability mid-range (about
0.6-0.9) and ablations that weaken it can show; a deterministic answer drove it
to 0.999, where log-prob effects vanish. The answer of every example stays the
majority continuation, so greedy accuracy still measures the task.

Held-out split: each instance has a *key* (IOI: the unordered name pair;
acronym: the word tuple; paren: the bracket plus its content or frame; filler:
the text). A stable hash sends 10% of keys to the held-out split. The training
stream never emits a held-out key and the evaluation stream only emits
held-out keys, so evaluation measures generalisation to unseen name pairs and
word combinations built from familiar vocabulary.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Literal

from featuregraph.demo.words import (
    ACRONYM_PREFIXES,
    ACRONYM_TAILS,
    ACRONYM_WORDS,
    ADJECTIVES,
    BRACKET_FRAMES,
    BRACKET_THINGS,
    BRACKETS,
    DAYS,
    IOI_ENDINGS,
    IOI_TEMPLATES,
    MONTHS,
    NAMES,
    NOUNS,
    OBJECTS,
    PLACES,
    TIMES,
    UNITS,
    VERBS_PAST,
    VERBS_TRANSITIVE_PAST,
)

__all__ = [
    "TASKS",
    "TAGS",
    "Example",
    "CorpusGenerator",
    "is_heldout",
]

#: Task tags, in the order used throughout the demo.
TASKS: tuple[str, ...] = ("paren", "acronym", "ioi")
#: All tags, including the plain-text filler.
TAGS: tuple[str, ...] = (*TASKS, "filler")

Split = Literal["train", "heldout"]

#: Percentage of instance keys reserved for evaluation.
HELDOUT_PERCENT = 10

#: Rates at which bracket and acronym documents continue with ``variant`` instead of
#: ``answer``, assigned per template (see :meth:`CorpusGenerator._takes_variant`).
AMBIGUITY_LEVELS: tuple[float, ...] = (0.1, 0.25, 0.4)

#: "a apple" -> "an apple" (only the article "a" before a vowel-initial word).
_A_BEFORE_VOWEL = re.compile(r"(^|\s)[aA] ([aeiouAEIOU])")


def _stable_hash(key: str) -> int:
    """Deterministic (process-independent) hash of ``key``; Python's ``hash`` is salted."""
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:8], "big")


def is_heldout(key: str) -> bool:
    """True when the instance key belongs to the held-out (evaluation) split."""
    return _stable_hash(key) % 100 < HELDOUT_PERCENT


@dataclass(frozen=True)
class Example:
    """One document of the corpus.

    Attributes:
        text: Full document text (prompt + answer + continuation). In training
            each document is its own row, between ``<|endoftext|>`` tokens.
        tag: ``"paren"``, ``"acronym"``, ``"ioi"`` or ``"filler"``.
        prompt: Text up to, and excluding, the answer (equals ``text`` for filler).
        answer: Expected continuation string; its first token is the one scored
            (``""`` for filler).
        key: Identity used for the held-out split.
        variant: The alternative continuation ``text`` uses right after ``prompt``
            instead of ``answer`` (controlled ambiguity); ``""`` when it uses ``answer``.
    """

    text: str
    tag: str
    prompt: str
    answer: str
    key: str
    variant: str = ""

    def to_json(self) -> dict[str, str]:
        """Row for the bundled jsonl files (``text`` is the prompt for task rows)."""
        if self.tag == "filler":
            return {"text": self.text, "tag": self.tag}
        return {"text": self.prompt, "tag": self.tag, "answer": self.answer}

    def as_dict(self) -> dict[str, str]:
        """All fields, for debugging."""
        return asdict(self)


class CorpusGenerator:
    """Draws documents from one split of the synthetic corpus.

    Args:
        seed: Seed of the private ``random.Random`` (nothing global is touched).
        split: ``"train"`` emits only non-held-out keys, ``"heldout"`` only
            held-out keys.
        list_fraction: Probability that a filler document contains a sentence
            repeating a list of names or objects.
        roll_call_fraction: Probability that a filler document is a word list
            read twice. Copying such lists is the easiest way for a fresh model
            to learn to copy earlier tokens, which IOI builds on.
        ambiguity: Let bracket and acronym documents take their ``variant`` at the
            rates of :data:`AMBIGUITY_LEVELS`. Off, the generator draws exactly the
            stream it drew before ambiguity existed (the committed model's corpus).
    """

    #: Default mixture of tags for the training stream (probabilities).
    DEFAULT_MIX: dict[str, float] = {"paren": 0.15, "acronym": 0.3, "ioi": 0.4, "filler": 0.15}

    def __init__(
        self,
        seed: int,
        split: Split = "train",
        list_fraction: float = 0.5,
        roll_call_fraction: float = 0.1,
        ambiguity: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.ambiguity = ambiguity
        self.split: Split = split
        #: Probability that a filler document contains a repeated-list sentence.
        self.list_fraction = list_fraction
        #: Probability that a filler document is a "roll call" (a word list read twice).
        self.roll_call_fraction = roll_call_fraction
        self._makers: dict[str, Callable[[], Example]] = {
            "paren": self._paren,
            "acronym": self._acronym,
            "ioi": self._ioi,
            "filler": self._filler,
        }

    # ------------------------------------------------------------------ API

    def example(self, tag: str) -> Example:
        """Draw one example with the given tag from this generator's split."""
        maker = self._makers[tag]
        want_heldout = self.split == "heldout"
        # Rejection sampling on the key; 10% acceptance for held-out draws.
        for _ in range(10_000):
            ex = maker()
            if is_heldout(ex.key) == want_heldout:
                return ex
        raise RuntimeError(f"could not draw a {self.split} example for {tag!r}")

    def stream(self, mix: dict[str, float] | None = None) -> Iterator[Example]:
        """Infinite stream of examples whose tags follow ``mix`` (default :attr:`DEFAULT_MIX`)."""
        mix = mix or self.DEFAULT_MIX
        tags, weights = zip(*mix.items(), strict=True)
        while True:
            yield self.example(self.rng.choices(tags, weights)[0])

    def take(self, n: int, mix: dict[str, float] | None = None) -> list[Example]:
        """First ``n`` examples of :meth:`stream`."""
        it = self.stream(mix)
        return [next(it) for _ in range(n)]

    def balanced(self, n_per_tag: int, tags: tuple[str, ...] = TASKS) -> list[Example]:
        """``n_per_tag`` distinct examples for each tag, interleaved tag by tag."""
        per_tag: dict[str, list[Example]] = {}
        for tag in tags:
            seen: set[str] = set()
            rows: list[Example] = []
            while len(rows) < n_per_tag:
                ex = self.example(tag)
                if ex.prompt not in seen:
                    seen.add(ex.prompt)
                    rows.append(ex)
            per_tag[tag] = rows
        return [per_tag[tag][i] for i in range(n_per_tag) for tag in tags]

    # ------------------------------------------------------------ helpers

    def _takes_variant(self, template_index: int) -> bool:
        """Draw whether this document takes its variant; the rate depends on the template only."""
        # With ambiguity on, always one draw whatever the outcome; off, none at all.
        return self.ambiguity and self.rng.random() < AMBIGUITY_LEVELS[template_index % len(AMBIGUITY_LEVELS)]

    def _pick(self, seq: tuple[str, ...]) -> str:
        return self.rng.choice(seq)

    def _year(self) -> str:
        return str(self.rng.randint(1900, 2024))

    def _small_number(self) -> str:
        return str(self.rng.randint(2, 99))

    def _fill(self, template: str, **fixed: str) -> str:
        """Fill the generic slots of a template (names, places, numbers...)."""
        slots = {
            "name": lambda: self._pick(NAMES),
            "name2": lambda: self._pick(NAMES),
            "place": lambda: self._pick(PLACES),
            "obj": lambda: self._pick(OBJECTS),
            "adj": lambda: self._pick(ADJECTIVES),
            "noun": lambda: self._pick(NOUNS),
            "verb": lambda: self._pick(VERBS_PAST),
            "tverb": lambda: self._pick(VERBS_TRANSITIVE_PAST),
            "day": lambda: self._pick(DAYS),
            "month": lambda: self._pick(MONTHS),
            "time": lambda: self._pick(TIMES),
            "unit": lambda: self._pick(UNITS),
            "year": self._year,
            "n": self._small_number,
        }
        values = {k: v() for k, v in slots.items() if "{" + k + "}" in template}
        values.update(fixed)
        # Same slot name -> same value, so "{name} ... {name}" repeats one entity.
        return _A_BEFORE_VOWEL.sub(r"\1an \2", template.format(**values))

    # ---------------------------------------------------------- filler

    FILLER_SENTENCES: tuple[str, ...] = (
        "The {adj} {noun} {verb} near the {place}.",
        "{name} {tverb} a {adj} {obj} {time}.",
        "It was a {adj} day at the {place}, and the {noun} {verb}.",
        "There were {n} {unit} between the {place} and the {place2}.",
        "{name} said that the {obj} was {adj}.",
        "In {year}, a {noun} {tverb} the {obj} at the {place}.",
        "On {day} the {noun} {verb} with {name}.",
        "{name} and {name2} {verb} {time}.",
        "Nobody knew why the {obj} was so {adj}.",
        "The {place} is {adj} in {month}.",
        "A {adj} {noun} lived next to the {place} for {n} years.",
        "{name} {tverb} the {obj} and then {verb}.",
        "Every {day}, the {noun} visits the {place}.",
        "The {obj} in the {place} was {adj} and {adj2}.",
        "We {verb} at the {place} until {name} came back.",
        "The {noun} asked {name} about the {obj}.",
        "After {n} {unit}, the {noun} {verb}.",
        "{name} kept the {obj} in a {adj} box.",
        # Entities mentioned twice, as in ordinary prose; these give the model a
        # plain copying signal (the second mention is predictable from the first).
        "{name} found a {obj} near the {place}. Later, {name} lost the {obj}.",
        "{name} went to the {place} on {day}, and {name} liked the {place}.",
        "The {noun} gave {name} a {obj}, and {name} kept the {obj}.",
        "{name} and {name2} walked home. {name2} was {adj}, but {name} was {adj2}.",
        "{name} saw a {adj} {obj}. The {obj} belonged to {name2}, so {name} called {name2}.",
        "Ask {name} about the {obj}, because {name} knows the {obj} well.",
        "The {place} near {name}'s house was {adj}, so {name} stayed at the {place}.",
        "{name} wrote to {name2} about the {obj}, and {name2} wrote back to {name}.",
    )

    def _filler_sentence(self, cast: dict[str, str] | None = None) -> str:
        template = self._pick(self.FILLER_SENTENCES)
        fixed: dict[str, str] = dict(cast or {})
        if "{place2}" in template:
            fixed["place2"] = self._pick(PLACES)
        if "{adj2}" in template:
            fixed["adj2"] = self._pick(ADJECTIVES)
        return self._fill(template, **fixed)

    #: Sentence pairs that mention the same list twice (dense copying signal,
    #: which bootstraps the name-copying circuitry IOI builds on). The flag says
    #: whether a list of objects reads naturally (otherwise names only).
    LIST_TEMPLATES: tuple[tuple[str, bool], ...] = (
        ("We invited {items}. In the end, {items} came.", False),
        ("The list said {items}. We checked {items} twice.", True),
        ("At first we met {items}, and later we met {items} again.", False),
        ("On {day} we saw {items}. On {day2} we saw {items} again.", True),
    )

    def _list_sentence(self) -> str:
        template, objects_ok = self.rng.choice(self.LIST_TEMPLATES)
        if objects_ok and self.rng.random() < 0.3:
            pool = tuple(f"the {o}" for o in OBJECTS)
        else:
            pool = NAMES
        items = self.rng.sample(pool, self.rng.randint(2, 4))
        listed = ", ".join(items[:-1]) + " and " + items[-1]
        return self._fill(template, items=listed, day2=self._pick(DAYS))

    #: (first intro, second intro, for names only?)
    ROLL_CALL_INTROS: tuple[tuple[str, str, bool], ...] = (
        ("Roll call:", "Again:", True),
        ("The names were", "Once more, the names were", True),
        ("Read this list:", "Now read it again:", False),
        ("Remember these words:", "Say them back:", False),
    )

    def _roll_call(self) -> str:
        """A list of 4-10 words read twice, without commas (a clean copying pattern)."""
        first, second, names_only = self.rng.choice(self.ROLL_CALL_INTROS)
        if names_only or self.rng.random() < 0.5:
            pool = NAMES
        else:
            pool = OBJECTS + PLACES + NOUNS + ADJECTIVES
        words = " ".join(self.rng.sample(pool, self.rng.randint(4, 10)))
        return f"{first} {words}. {second} {words}."

    def _filler(self) -> Example:
        if self.rng.random() < self.roll_call_fraction:
            text = self._roll_call()
            return Example(text=text, tag="filler", prompt=text, answer="", key="filler:" + text)
        n_sentences = self.rng.randint(1, 4)
        # Like a short story, a document keeps talking about the same two people,
        # so most name mentions after the first are predictable by copying.
        cast = {"name": self._pick(NAMES), "name2": self._pick(NAMES)}
        sentences = [self._filler_sentence(cast) for _ in range(n_sentences)]
        if self.rng.random() < self.list_fraction:
            sentences[self.rng.randrange(len(sentences))] = self._list_sentence()
        text = " ".join(sentences)
        return Example(text=text, tag="filler", prompt=text, answer="", key="filler:" + text)

    # ---------------------------------------------------------- paren

    #: Contents that form a complete parenthetical; usable with either bracket.
    PAREN_CONTENTS: tuple[str, ...] = (
        "born {year}", "see page {n}", "in {year}", "about {n} {unit}", "near the {place}",
        "with {name}", "for {n} days", "or so we thought", "also called the {obj}",
        "which was {adj}", "since {month}", "on {day}", "not the {obj}", "{n} in total",
    )
    #: Contents typical of square-bracket notes.
    SQUARE_CONTENTS: tuple[str, ...] = ("{n}", "citation needed", "sic", "see note {n}", "edited by {name}")

    PAREN_PREFIXES: tuple[str, ...] = (
        "{name} visited the {place}",
        "The {obj} was left at the {place}",
        "We met {name} at the {place}",
        "The {place} opened in {month}",
        "The {adj} {noun} sold a {obj}",
        "Our {noun} moved to the {place}",
        "{name} wrote a book about the {obj}",
        "The old {place} was closed",
    )
    PAREN_ENDINGS: tuple[str, ...] = (
        ".", ".", " last year.", ", and then {name} left.", " before the rain.",
        " and everyone agreed.", ", but nobody cared.",
    )

    def _paren(self) -> Example:
        roll = self.rng.random()
        if roll < 0.4:
            return self._paren_frame()
        if roll < 0.5:
            return self._paren_copyright()
        return self._paren_inline()

    def _paren_inline(self) -> Example:
        opener = self._pick(tuple(BRACKETS))
        pool = self.PAREN_CONTENTS + (self.SQUARE_CONTENTS if opener == "[" else ())
        content = self._fill(self._pick(pool))
        prefix_index = self.rng.randrange(len(self.PAREN_PREFIXES))
        prompt = f"{self._fill(self.PAREN_PREFIXES[prefix_index])} {opener}{content}"
        answer = BRACKETS[opener]
        # The parenthetical goes on with a second item before it closes.
        variant = ", " + self._fill(self._pick(self.PAREN_CONTENTS)) if self._takes_variant(prefix_index) else ""
        ending = self._fill(self._pick(self.PAREN_ENDINGS))
        return Example(
            text=prompt + variant + answer + ending,
            tag="paren",
            prompt=prompt,
            answer=answer,
            key=f"paren:{opener}{content}",
            variant=variant,
        )

    def _paren_copyright(self) -> Example:
        # A preceding sentence gives the key some variety; "(C" is also the
        # start of many acronyms, so the model must look at the context.
        lead = self._filler_sentence() + " " if self.rng.random() < 0.7 else ""
        prompt = f"{lead}Copyright (C"
        ending = self._fill(" {year} {name} and {name2}.")
        variant = self._fill(", {year}") if self._takes_variant(1) else ""
        return Example(
            text=prompt + variant + ")" + ending, tag="paren", prompt=prompt, answer=")",
            key="paren:copyright:" + lead, variant=variant,
        )

    def _paren_frame(self) -> Example:
        opener = self._pick(tuple(BRACKETS))
        frame_index = self.rng.randrange(len(BRACKET_FRAMES))
        head, tail = BRACKET_FRAMES[frame_index]
        thing = self._pick(BRACKET_THINGS)
        prompt = f"{head.format(thing=thing)} {opener} {tail}"
        answer = " " + BRACKETS[opener]
        # Closed with the other kind of bracket (a mismatched pair).
        other = next(close for op, close in BRACKETS.items() if op != opener)
        variant = " " + other if self._takes_variant(frame_index) else ""
        ending = self._pick((".", ".", ", as usual.", " in every case."))
        return Example(
            text=prompt + (variant or answer) + ending,
            tag="paren",
            prompt=prompt,
            answer=answer,
            key=f"paren:frame:{head}|{thing}|{opener}",
            variant=variant,
        )

    # -------------------------------------------------------- acronym

    def _acronym(self) -> Example:
        n_words = self.rng.choices((2, 3, 4), (0.2, 0.6, 0.2))[0]
        words = self.rng.sample(ACRONYM_WORDS, n_words)
        initials = "".join(w[0] for w in words)
        prefix_index = self.rng.randrange(len(ACRONYM_PREFIXES))
        prompt = f"{ACRONYM_PREFIXES[prefix_index]} {' '.join(words)} ({initials[0]}"
        answer = initials[1:]
        # The acronym skips the second word ("(FI)"); of two words only the initial is left ("(F)").
        variant = (initials[2:] or ")") if self._takes_variant(prefix_index) else ""
        tail = self._fill(self._pick(ACRONYM_TAILS))
        rest = variant or answer
        text = prompt + rest + ("" if rest == ")" else ")") + tail
        return Example(
            text=text,
            tag="acronym",
            prompt=prompt,
            answer=answer,
            key="acronym:" + " ".join(words),
            variant=variant,
        )

    # ------------------------------------------------------------ ioi

    def _ioi(self) -> Example:
        io, s = self.rng.sample(NAMES, 2)
        a, b = (io, s) if self.rng.random() < 0.5 else (s, io)
        template = self._pick(IOI_TEMPLATES)
        prompt = self._fill(template, A=a, B=b, S=s)
        answer = " " + io
        ending = self._pick(IOI_ENDINGS)
        return Example(
            text=prompt + answer + ending,
            tag="ioi",
            prompt=prompt,
            answer=answer,
            key="ioi:" + "|".join(sorted((io, s))),
        )
