#!/usr/bin/env python3
"""Train the embedded default checkpoint in ``model/``: a small YOSO extractive-QA model, trained on CPU
on a synthetic reading-comprehension task generated here, with a WordPiece tokenizer trained on the
same corpus.

The task: a long context (a few hundred to ~1000 tokens) of short fact sentences about many people
(where they live, when they were born, where and when they moved, what they own or bought, their job,
their favourite colour), shuffled among distractor sentences that mention cities, years, colours and
objects but no person; a question asks one attribute of one person; the answer is a span of the context.

    python scripts/train_default_model.py [--output model] [--seed 0]

Deterministic for a given ``--seed`` (single-process CPU, fixed thread count). Training, validation and
held-out test examples come from different seeds. After training the script evaluates exact match and
token F1 on the held-out split with PyTorch (expectation), PyTorch (LSH) and ONNX Runtime (LSH, via the
exported model and ``QuestionAnsweringPipeline``) and writes ``eval.json`` next to the model.

The data generator is importable (``make_split``, ``make_example``, ``exact_match``, ``token_f1``) so that
tests can regenerate the held-out split without training.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shlex
import string
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Synthetic reading comprehension
# --------------------------------------------------------------------------------------------------

NAMES = """Ada Bruno Chen Dana Emil Farah Goran Hana Ivo Jana Kofi Lena Marek Nadia Omar Petra Quinn Rosa
Samir Tara Ugo Vera Wanda Xavier Yara Zane Aiko Boris Carmen Dmitri Elena Felix Greta Hugo Ingrid Jonas
Kira Luca Maya Nico Olga Pablo Rhea Sven Tomas Uma Viktor Wren Yusuf Zelda Anton Bianca Cyrus Delia Eero
Fiona Gideon Helga Idris Juno Karim Leila Milo Nora Oskar Priya Raul Sofia Theo Ursula Vito Willa Yannick
Zora Arjun Beatrix Cosmo Dalia Ezra Freya Gustav Hilde Ilan Jasper Kaia Linus Mira Nils Odette Pavel Rania
Silas Thea Umar Valeria Wim Ximena Yves Zuri Abel Brigid Caspar Dora Elio Flora Gael Harriet Imre Jovan Kalinda
Lorenz Marta Nuno Orla Piet Ronja Stellan Tilde Ulrich Vesna Walter Yuki Zeno Alma Bjorn Clara Duncan Edda
Ferran Gemma Hakon Isla Joaquin Kasimir Liesel Mateo Noor Otto Paloma Rafael Saskia Tobias Una Vince Wilma
Yosef Zofia""".split()

CITIES = """Oslo Lima Accra Hanoi Quito Riga Perth Cairo Dakar Porto Tunis Kyoto Bergen Malmo Lyon Turin Graz
Krakow Tallinn Vilnius Bilbao Seville Naples Split Bruges Ghent Delft Aarhus Tromso Reykjavik Cork Galway
Leeds Bristol Dundee Quebec Denver Austin Boise Tucson Recife Cusco Salta Mendoza Nairobi Kampala Lusaka
Harare Durban Agadir Izmir Tbilisi Yerevan Baku Almaty Osaka Busan Manila Hobart Nelson""".split()

OBJECTS = """lamp violin bicycle kettle map compass camera clock radio telescope guitar kayak piano scooter
tent canoe drum chair sofa mirror vase teapot umbrella backpack typewriter microscope globe sextant harp
flute trumpet cello rug quilt lantern hammock skateboard sled tractor wagon""".split()

COLORS = "red blue green yellow black white orange purple grey brown pink silver golden teal".split()

JOBS = """baker pilot nurse teacher farmer painter plumber sailor dentist lawyer chemist carpenter
librarian gardener tailor architect journalist firefighter engineer photographer butcher florist
potter jeweller translator geologist surgeon mechanic cartographer beekeeper""".split()

YEARS = [str(y) for y in range(1900, 2030)]

# Relations: (name, [(question template, answer slot)], [sentence templates]).
QUESTIONS = {
    "live_city": ["Where does {X} live?", "In which city does {X} live?", "What city does {X} live in?"],
    "born_year": ["When was {X} born?", "In which year was {X} born?", "What year was {X} born in?"],
    "move_city": ["Where did {X} move?", "To which city did {X} move?", "Where did {X} move to?"],
    "move_year": ["When did {X} move?", "In which year did {X} move?", "What year did {X} move?"],
    "buy_item": ["What did {X} buy?", "What did {X} purchase?"],
    "own_item": ["What does {X} own?", "What object does {X} own?"],
    "job": ["What is the job of {X}?", "What does {X} work as?", "What is {X}'s job?"],
    "fav_color": ["What is the favourite colour of {X}?", "Which colour does {X} like best?"],
}

# Distractor sentences: the same kinds of values (cities, years, colours, objects) but no person.
FILLERS = [
    "The market in {CITY} was busy in {YEAR}.",
    "A {COLOR} {OBJECT} was found near {CITY}.",
    "The museum of {CITY} opened in {YEAR}.",
    "It rained in {CITY} for a week.",
    "In {YEAR} the river near {CITY} froze.",
    "A {COLOR} {OBJECT} costs more than a {OBJECT}.",
    "The old {OBJECT} in the hall is {COLOR}.",
    "Nobody in {CITY} remembers the winter of {YEAR}.",
    "The train to {CITY} was late again.",
    "Many people in {CITY} own a {OBJECT}.",
    "The {COLOR} house on the hill was sold in {YEAR}.",
    "Every {JOB} in {CITY} knows the harbour.",
]


@dataclass
class Example:
    id: str
    question: str
    context: str
    answer: str
    answer_start: int  # character offset in context
    relation: str

    def to_json(self) -> dict:
        return asdict(self)


def _fill(template: str, rng: random.Random) -> str:
    out = template
    for slot, pool in (("{CITY}", CITIES), ("{YEAR}", YEARS), ("{COLOR}", COLORS), ("{OBJECT}", OBJECTS), ("{JOB}", JOBS)):
        while slot in out:
            out = out.replace(slot, rng.choice(pool), 1)
    return out


def _person_sentences(name: str, rng: random.Random) -> list[tuple[str, dict[str, tuple[int, str]]]]:
    """Sentences about one person: [(sentence, {relation: (char offset in sentence, answer)})]."""
    rels = rng.sample(["live", "born", "move", "buy", "own", "job", "fav"], rng.randint(1, 4))
    out = []

    def sent(parts):
        # parts: list of str or (relation(s), value); returns sentence text and answer offsets
        text, answers = "", {}
        for p in parts:
            if isinstance(p, tuple):
                for r in p[0]:
                    answers[r] = (len(text), p[1])
                text += p[1]
            else:
                text += p
        out.append((text, answers))

    city, year = rng.choice(CITIES), rng.choice(YEARS)
    item = f"{rng.choice(COLORS)} {rng.choice(OBJECTS)}"

    def a(phrase: str) -> str:  # the article before a (colour, object) answer
        return " an " if phrase[0] in "aeiou" else " a "
    merged_buy = "move" in rels and "buy" in rels and rng.random() < 0.5
    for r in rels:
        if r == "live":
            sent([f"{name} lives in ", (["live_city"], rng.choice(CITIES)), "."])
        elif r == "born":
            sent([f"{name} was born in ", (["born_year"], rng.choice(YEARS)), "."])
        elif r == "move":
            if merged_buy:
                sent([f"{name} moved to ", (["move_city"], city), " in ", (["move_year"], year),
                      " and bought" + a(item), (["buy_item"], item), "."])
            elif rng.random() < 0.5:
                sent([f"{name} moved to ", (["move_city"], city), " in ", (["move_year"], year), "."])
            else:
                sent([f"In ", (["move_year"], year), f" {name} moved to ", (["move_city"], city), "."])
        elif r == "buy" and not merged_buy:
            item2 = f"{rng.choice(COLORS)} {rng.choice(OBJECTS)}"
            if rng.random() < 0.5:
                sent([f"{name} bought" + a(item2), (["buy_item"], item2), "."])
            else:
                sent([f"{name} bought" + a(item2), (["buy_item"], item2), f" in {rng.choice(CITIES)}."])
        elif r == "own":
            item3 = f"{rng.choice(COLORS)} {rng.choice(OBJECTS)}"
            sent([f"{name} owns" + a(item3), (["own_item"], item3), "."])
        elif r == "job":
            job = rng.choice(JOBS)
            sent([f"{name} works as" + a(job), (["job"], job), "."])
        elif r == "fav":
            if rng.random() < 0.5:
                sent([f"The favourite colour of {name} is ", (["fav_color"], rng.choice(COLORS)), "."])
            else:
                sent([f"{name} likes ", (["fav_color"], rng.choice(COLORS)), " best."])
    return out


def make_example(rng: random.Random, min_sentences: int, max_sentences: int, uid: str = "") -> Example:
    """One example: a context of ``min_sentences``..``max_sentences`` sentences and one question about it."""
    n_target = rng.randint(min_sentences, max_sentences)
    names = rng.sample(NAMES, len(NAMES))
    facts: list[tuple[str, dict]] = []  # (sentence, {relation: (offset, answer)}) with person
    owners: list[str] = []
    n_fill = 0
    while len(facts) + n_fill < n_target and names:
        name = names.pop()
        for s, ans in _person_sentences(name, rng):
            facts.append((s, ans))
            owners.append(name)
        n_fill += sum(rng.random() < 0.2 for _ in range(3))  # ~0.6 distractor per person
    sentences = [(s, ans, who) for (s, ans), who in zip(facts, owners)]
    sentences += [(_fill(rng.choice(FILLERS), rng), {}, None) for _ in range(n_fill)]
    rng.shuffle(sentences)
    # Pick the question: a random (person, relation) fact.
    candidates = [(i, r) for i, (_, ans, who) in enumerate(sentences) for r in ans]
    qi, rel = rng.choice(candidates)
    who = sentences[qi][2]
    question = rng.choice(QUESTIONS[rel]).format(X=who)
    context, start = "", -1
    for i, (s, ans, _) in enumerate(sentences):
        if context:
            context += " "
        if i == qi:
            off, answer = ans[rel]
            start = len(context) + off
        context += s
    assert context[start : start + len(answer)] == answer
    return Example(uid, question, context, answer, start, rel)


def make_split(n: int, seed: int, min_sentences: int = 40, max_sentences: int = 140, name: str = "ex") -> list[Example]:
    """``n`` examples from ``random.Random(seed)`` (same seed, same examples, on any machine)."""
    rng = random.Random(seed)
    return [make_example(rng, min_sentences, max_sentences, f"{name}-{seed}-{i}") for i in range(n)]


# SQuAD-style answer normalisation and metrics.
def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(p) & Counter(t)
    same = sum(common.values())
    if same == 0:
        return float(p == t)
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


# Split seeds: derived from --seed, disjoint streams for train / validation / held-out test.
def split_seeds(seed: int) -> dict[str, int]:
    return {"train": 1_000_003 * seed + 11, "validation": 1_000_003 * seed + 22, "test": 1_000_003 * seed + 33}


TEST_SIZE = 200
TEST_SENTENCES = (40, 140)  # ~300..1000 tokens


def heldout_split(seed: int = 0, n: int = TEST_SIZE) -> list[Example]:
    """The held-out test split of ``--seed`` (never used for training or model selection)."""
    return make_split(n, split_seeds(seed)["test"], *TEST_SENTENCES, name="test")


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


def build_tokenizer(corpus, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]  # ids 0..4: [PAD] = 1 = YOSO's pad_token_id
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token="[CLS]", pad_token="[PAD]", sep_token="[SEP]",
        unk_token="[UNK]", mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )
