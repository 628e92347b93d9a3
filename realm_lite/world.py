"""The synthetic encyclopedia ("world"): fictional entities, typed facts, documents z with salient spans.

Every fact (subject, relation, value) is stated in two documents: the subject's own and a related
one (the value's document, or for a date the document of a related entity). So when a sentence of
one document is masked, the *other* document is the gold z that lets the reader fill it in - the
situation REALM's retriever must learn to exploit (notebook 01 shows it). Two knobs change the
world's shape: `world_restate=3` states a fact in a third document too, `world_phrasings` narrows
the templates each relation is drawn from.

    world = World.generate(get_config("quick"))
    world.documents[0].text, world.documents[0].mentions
    changed = world.set_fact("E0012", "birthplace", "E0200")   # re-renders the affected documents
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from realm_lite.io import read_jsonl, write_jsonl

KINDS = ("person", "city", "country", "organisation", "work", "event")
KIND_SHARE = {"person": 0.40, "city": 0.20, "country": 0.03, "organisation": 0.12, "work": 0.15, "event": 0.10}
LABEL = {"person": "PERSON", "city": "PLACE", "country": "PLACE", "organisation": "ORG", "work": "WORK", "event": "EVENT"}
MONTHS = ("January February March April May June July August September October November December").split()

# relation -> (subject kind, value kind or "date"/"year", where the second statement lives)
#   "value": in the value entity's document;  "via:<relation>": in the document of that relation's value
RELATIONS = {
    "born": ("person", "date", "via:birthplace"),
    "birthplace": ("person", "city", "value"),
    "employer": ("person", "organisation", "value"),
    "country": ("city", "country", "value"),
    "founded_city": ("city", "year", "via:country"),
    "capital": ("country", "city", "value"),
    "founder": ("organisation", "person", "value"),
    "founded": ("organisation", "year", "via:founder"),
    "headquarters": ("organisation", "city", "value"),
    "author": ("work", "person", "value"),
    "published": ("work", "year", "via:author"),
    "location": ("event", "city", "value"),
    "year": ("event", "year", "via:location"),
    "leader": ("event", "person", "value"),
}

# Sentences in the subject's own document. {s} = subject, {v} = value; one template is drawn per fact.
OWN = {
    "born": ["{s} was born on {v}.", "{s} was born {v}.", "The birth of {s} is recorded on {v}."],
    "birthplace": ["{s} was born in {v}.", "{s} grew up in {v}, the city of their birth.", "{s} was a native of {v}."],
    "employer": ["{s} worked for {v}.", "{s} was a member of {v}.", "For most of their career {s} served {v}."],
    "country": ["{s} is a city in {v}.", "{s} lies in the country of {v}.", "{s} belongs to {v}."],
    "founded_city": ["{s} was founded in {v}.", "The city of {s} dates from {v}.", "Settlers founded {s} in {v}."],
    "capital": ["The capital of {s} is {v}.", "{s} is governed from its capital, {v}.", "{v} serves as the capital of {s}."],
    "founder": ["{s} was founded by {v}.", "{v} established {s}.", "The founder of {s} was {v}."],
    "founded": ["{s} was established in {v}.", "{s} dates from {v}.", "{s} opened its doors in {v}."],
    "headquarters": ["{s} is based in {v}.", "The seat of {s} is in {v}.", "{s} has its headquarters in {v}."],
    "author": ["{s} is a work by {v}.", "{s} was created by {v}.", "{v} is the author of {s}."],
    "published": ["{s} first appeared in {v}.", "{s} was completed in {v}.", "{s} dates from {v}."],
    "location": ["{s} took place in {v}.", "{s} was held at {v}.", "The site of {s} was {v}."],
    "year": ["{s} happened in {v}.", "{s} is dated to {v}.", "{s} took place in the year {v}."],
    "leader": ["{s} was led by {v}.", "{v} led {s}.", "The leader of {s} was {v}."],
}
# Sentences in the other document. {s} = fact subject, {v} = value, {d} = the date stated alongside.
OTHER = {
    "birthplace": ["{v} is the birthplace of {s}, born on {d}.", "{s} was born in {v} on {d}.", "Among the natives of {v} is {s}, born {d}."],
    "employer": ["{s} was one of the members of {v}.", "{v} employed {s}.", "Among those who served {v} was {s}."],
    "country": ["{v} includes the city of {s}, founded in {d}.", "{s}, a city of {v}, was founded in {d}.", "In {d} the city of {s} was founded in {v}."],
    "capital": ["{v} is the capital of {s}.", "{v} became the seat of government of {s}.", "The country of {s} is ruled from {v}."],
    "founder": ["{v} founded {s} in {d}.", "In {d} {v} established {s}.", "{s} was set up by {v} in {d}."],
    "headquarters": ["{v} is home to {s}.", "{s} keeps its seat in {v}.", "The city of {v} hosts {s}."],
    "author": ["{v} created {s}, which appeared in {d}.", "In {d} {v} completed {s}.", "{s} ({d}) is among the works of {v}."],
    "location": ["{v} was the site of {s} in {d}.", "In {d} {s} took place in {v}.", "{s} was held in {v} in {d}."],
    "leader": ["{v} led {s}.", "{s} was under the command of {v}.", "{v} was the leader of {s}."],
}
QUESTIONS = {
    "born": ["When was {s} born?", "What is the birth date of {s}?"],
    "birthplace": ["Where was {s} born?", "In which city was {s} born?"],
    "employer": ["Which organisation did {s} work for?", "Whom did {s} serve?"],
    "country": ["In which country is {s}?", "Which country does {s} belong to?"],
    "founded_city": ["When was {s} founded?", "In what year was the city of {s} founded?"],
    "capital": ["What is the capital of {s}?", "Which city is the capital of {s}?"],
    "founder": ["Who founded {s}?", "Who established {s}?"],
    "founded": ["In what year was {s} established?", "When was {s} founded?"],
    "headquarters": ["Where is {s} based?", "In which city is {s} headquartered?"],
    "author": ["Who created {s}?", "Who is the author of {s}?"],
    "published": ["When did {s} first appear?", "In what year was {s} completed?"],
    "location": ["Where did {s} take place?", "In which city was {s} held?"],
    "year": ["In what year did {s} take place?", "When did {s} happen?"],
    "leader": ["Who led {s}?", "Who was the leader of {s}?"],
}
INTRO = {
    "person": ["{s} was a {a}.", "{s} was a well-known {a}.", "{s} worked as a {a}."],
    "city": ["{s} is a city.", "{s} is an old city.", "{s} is a {a} city."],
    "country": ["{s} is a country.", "{s} is a {a} country."],
    "organisation": ["{s} is a {a}.", "{s} was a {a}."],
    "work": ["{s} is a {a}.", "{s} is a celebrated {a}."],
    "event": ["{s} was a {a}.", "{s} was a famous {a}."],
}
ATTRS = {
    "person": "cartographer weaver physician sailor astronomer merchant poet engineer painter judge brewer architect".split(),
    "city": "coastal river mountain harbour market frontier".split(),
    "country": "small mountainous coastal landlocked".split(),
    "work": "novel play symphony atlas poem painting".split(),
}
ONSETS = "b br c d dr f g gr h k l m n p r s st t th v w z".split()
VOWELS = "a e i o u ae ei ou ia".split()
CODAS = ["", "", "n", "r", "l", "th", "s", "m", "nd", "rk", "x"]
CITY_END = ["wick", "holm", "bury", "gard", "mere", "ford", "stead", "port"]
COUNTRY_END = ["ia", "or", "land", "mark", "ovia"]
ORG_FORM = {"The {w} Institute": "research institute", "{w} Company": "trading company", "House of {w}": "bank",
            "The {w} Guild": "guild", "{w} Academy": "academy", "Order of {w}": "society"}
WORK_ADJ = "Silent Broken Golden Last Hidden Winter Distant Crimson Quiet Burning Hollow Northern".split()
WORK_NOUN = "Harbor Crown Garden Voyage Mirror Lantern River Tower Letters Orchard Bridge Song".split()
EVENT_FORM = {"Siege of {w}": "siege", "Treaty of {w}": "treaty", "{w} Festival": "festival",
              "Expedition to {w}": "expedition", "Council of {w}": "council"}


@dataclass
class Entity:
    id: str
    kind: str
    name: str
    attr: str  # occupation, kind of work, ...: rendered, but not a salient fact


@dataclass
class Fact:
    id: str
    subject: str  # entity id
    relation: str
    value: str  # entity id, or a date string ("3 May 1870" or "1870")
    split: str = "train"  # "train" or "heldout" (held out from pre-training for evaluation)


@dataclass
class Mention:
    start: int
    end: int
    label: str  # PERSON, PLACE, ORG, WORK, EVENT or DATE
    entity: str | None = None  # entity id, None for dates
    facts: list = field(default_factory=list)  # ids of the facts in its sentence that it takes part in


@dataclass
class Sentence:
    start: int
    end: int
    facts: list  # ids of the facts this sentence states


@dataclass
class Document:
    id: str
    title: str
    text: str
    mentions: list  # [Mention]: exact character offsets of every entity and date mention
    sentences: list  # [Sentence]


def _rng(*keys) -> random.Random:
    """A private random stream per (seed, key...): re-rendering one document never moves another."""
    h = hashlib.sha256("|".join(map(str, keys)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def _value_kind(relation: str) -> str:
    return RELATIONS[relation][1]


class World:
    """Entities, facts and the documents rendered from them (the default corpus; notebook 01)."""

    def __init__(self, seed: int, entities: list[Entity], facts: list[Fact], config: dict | None = None):
        self.seed = seed
        self.entities = {e.id: e for e in entities}
        self.facts = {f.id: f for f in facts}
        self.config = config or {}
        self.phrasings = self.config.get("phrasings", 3)  # worlds saved before these knobs: the defaults
        self.restate = self.config.get("restate", 2)
        self._index_facts()
        self.questions = self._make_questions()
        self.documents = [self.render(e.id) for e in entities]
        self._doc_index = {d.id: i for i, d in enumerate(self.documents)}

    # ---- generation -------------------------------------------------------------------------
    @classmethod
    def generate(cls, cfg) -> "World":
        """A world of `cfg.world_entities` entities, identical for the same `cfg.seed`."""
        n = cfg.world_entities
        if n < 50:
            raise ValueError(f"world_entities={n} is too small: need at least 50 for every kind to appear")
        rng = random.Random(cfg.seed)
        names: set[str] = set()

        def unique(make):
            for _ in range(1000):
                name = make()
                if name not in names:
                    names.add(name)
                    return name
            raise RuntimeError("could not draw a fresh name; lower world_entities")

        def word(syl):
            return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syl)) + rng.choice(CODAS)

        make = {
            "person": lambda: f"{word(rng.randint(1, 2)).title()} {word(rng.randint(2, 3)).title()}",
            "city": lambda: (word(rng.randint(1, 2)) + rng.choice(CITY_END)).title(),
            "country": lambda: (word(rng.randint(1, 2)) + rng.choice(COUNTRY_END)).title(),
            "organisation": lambda: rng.choice(list(ORG_FORM)).format(w=word(2).title()),
            "work": lambda: f"The {rng.choice(WORK_ADJ)} {rng.choice(WORK_NOUN)} of {word(2).title()}",
            "event": lambda: rng.choice(list(EVENT_FORM)).format(w=word(2).title()),
        }
        counts = {k: max(3, round(n * KIND_SHARE[k])) for k in KINDS}
        counts["person"] += n - sum(counts.values())
        entities, by_kind = [], {k: [] for k in KINDS}
        for kind in KINDS:
            for _ in range(counts[kind]):
                name = unique(make[kind])
                forms = {"organisation": ORG_FORM, "event": EVENT_FORM}.get(kind)
                attr = next(a for f, a in forms.items() if re.fullmatch(f.replace("{w}", "[A-Za-z]+"), name)) \
                    if forms else rng.choice(ATTRS[kind])
                e = Entity(f"E{len(entities):05d}", kind, name, attr)
                entities.append(e)
                by_kind[kind].append(e.id)

        facts: list[Fact] = []
        born_year: dict[str, int] = {}

        def add(subject, relation, value):
            split = "heldout" if rng.random() < cfg.heldout_fraction else "train"
            facts.append(Fact(f"F{len(facts):05d}", subject, relation, str(value), split))

        for p in by_kind["person"]:
            y = rng.randint(1600, 1900)
            born_year[p] = y
            add(p, "born", f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {y}")
            add(p, "birthplace", rng.choice(by_kind["city"]))
            add(p, "employer", rng.choice(by_kind["organisation"]))
        cities = list(by_kind["city"])
        rng.shuffle(cities)
        for i, c in enumerate(cities):  # every country gets at least one city, the first is its capital
            add(c, "country", by_kind["country"][i % len(by_kind["country"])])
            add(c, "founded_city", rng.randint(800, 1600))
        for i, k in enumerate(by_kind["country"]):
            add(k, "capital", cities[i])
        for o in by_kind["organisation"]:
            founder = rng.choice(by_kind["person"])
            add(o, "founder", founder)
            add(o, "founded", born_year[founder] + rng.randint(20, 60))
            add(o, "headquarters", rng.choice(by_kind["city"]))
        for w in by_kind["work"]:
            author = rng.choice(by_kind["person"])
            add(w, "author", author)
            add(w, "published", born_year[author] + rng.randint(18, 70))
        for ev in by_kind["event"]:
            leader = rng.choice(by_kind["person"])
            add(ev, "location", rng.choice(by_kind["city"]))
            add(ev, "year", born_year[leader] + rng.randint(18, 60))
            add(ev, "leader", leader)
        return cls(cfg.seed, entities, facts, config={"world_entities": n, "heldout_fraction": cfg.heldout_fraction,
                                                        "question_splits": list(cfg.question_splits),
                                                        "phrasings": cfg.world_phrasings, "restate": cfg.world_restate})

    # ---- rendering --------------------------------------------------------------------------
    def _index_facts(self) -> None:
        self._by_key = {(f.subject, f.relation): f for f in self.facts.values()}
        self._by_subject: dict[str, list[Fact]] = {e: [] for e in self.entities}
        self._by_value: dict[str, list[Fact]] = {e: [] for e in self.entities}
        for f in sorted(self.facts.values(), key=lambda f: f.id):
            self._by_subject[f.subject].append(f)
            if f.value in self._by_value:
                self._by_value[f.value].append(f)
        self._third_in: dict[str, list[Fact]] = {e: [] for e in self.entities}
        for f in sorted(self.facts.values(), key=lambda f: f.id):
            third = self._third(f)
            if third is not None:
                self._third_in[third].append(f)

    def fact_of(self, subject: str, relation: str) -> Fact:
        if (subject, relation) not in self._by_key:
            raise KeyError(f"entity {subject} has no {relation!r} fact")
        return self._by_key[(subject, relation)]

    def _second(self, fact: Fact) -> str:
        """The related entity whose document states the fact beside the subject's own."""
        where = RELATIONS[fact.relation][2]
        return fact.value if where == "value" else self.fact_of(fact.subject, where[4:]).value

    def _third(self, fact: Fact) -> str | None:
        """With `restate=3`: the first other entity the subject links to, whose document states the fact too.

        None when there is none (a city's, a country's or a work's facts: their subjects link to one entity)."""
        if self.restate < 3:
            return None
        second = self._second(fact)
        for f in self._by_subject[fact.subject]:  # in fact-id order, the order they were generated
            if f.value in self.entities and f.value not in (second, fact.subject):
                return f.value
        return None

    def homes(self, fact: Fact) -> list[str]:
        """Ids of the documents that state this fact: the subject's, the related one's, and a third if any."""
        third = self._third(fact)
        return [fact.subject, self._second(fact)] + ([third] if third else [])

    def _partner(self, fact: Fact) -> Fact | None:
        """The date fact stated beside an entity-valued fact in the other document (born with birthplace)."""
        for rel, (_, _, where) in RELATIONS.items():
            if where == f"via:{fact.relation}" and RELATIONS[rel][0] == RELATIONS[fact.relation][0]:
                return self.fact_of(fact.subject, rel)
        return None

    def render(self, entity_id: str) -> Document:
        """Document z of one entity: an intro, its own facts, then other entities' facts that name it."""
        e = self.entities[entity_id]
        parts: list[tuple[str, dict, list]] = []  # (template, slots, fact ids)
        rng = _rng(self.seed, "intro", e.id)
        parts.append((rng.choice(INTRO[e.kind]), {"s": (e.id, [])}, []))
        n = self.phrasings  # the first n templates of each relation (all 3 by default)
        for f in self._by_subject[e.id]:
            t = _rng(self.seed, "own", f.id).choice(OWN[f.relation][:n])
            parts.append((t, {"s": (e.id, [f.id]), "v": (f.value, [f.id])}, [f.id]))
        for f in self._by_value[e.id]:
            if f.relation in OTHER:
                t = _rng(self.seed, "other", f.id).choice(OTHER[f.relation][:n])
                ids, slots = [f.id], {"s": (f.subject, [f.id]), "v": (f.value, [f.id])}
                partner = self._partner(f)
                if partner is not None:
                    ids.append(partner.id)
                    slots = {"s": (f.subject, ids), "v": (f.value, [f.id]), "d": (partner.value, [partner.id])}
                parts.append((t, slots, ids))
        for f in self._third_in[e.id]:  # restate=3: a related entity's fact, in its own-document phrasing
            t = _rng(self.seed, "third", f.id).choice(OWN[f.relation][:n])
            parts.append((t, {"s": (f.subject, [f.id]), "v": (f.value, [f.id])}, [f.id]))
        text, mentions, sentences = "", [], []
        for template, slots, fact_ids in parts:
            if text:
                text += " "
            s0 = len(text)
            for piece in re.split(r"(\{[svda]\})", template):
                if piece in ("{s}", "{v}", "{d}"):
                    value, f_ids = slots[piece[1]]
                    if value in self.entities:
                        ent = self.entities[value]
                        surface, label, ent_id = ent.name, LABEL[ent.kind], ent.id
                    else:
                        surface, label, ent_id = value, "DATE", None
                    mentions.append(Mention(len(text), len(text) + len(surface), label, ent_id, list(f_ids)))
                    text += surface
                elif piece == "{a}":
                    if text.endswith(" a ") and e.attr[0] in "aeiou":
                        text = text[:-1] + "n "
                    text += e.attr
                else:
                    text += piece
            text = text[:s0] + text[s0:][0].upper() + text[s0 + 1:]  # "{v} is ..." may start lower-case
            sentences.append(Sentence(s0, len(text), fact_ids))
        return Document(e.id, e.name, text, mentions, sentences)

    def _make_questions(self) -> list[dict]:
        a, b, _ = self.config.get("question_splits", (0.8, 0.1, 0.1))
        out = []
        for f in sorted(self.facts.values(), key=lambda f: f.id):
            subject = self.entities[f.subject]
            u = _rng(self.seed, "split", subject.id).random()  # by entity: all of its questions together
            split = "train" if u < a else "dev" if u < a + b else "test"
            q = _rng(self.seed, "question", f.id).choice(QUESTIONS[f.relation]).format(s=subject.name)
            answer = self.entities[f.value].name if f.value in self.entities else f.value
            out.append({"id": f"Q{f.id[1:]}", "question": q, "answers": [answer], "fact": f.id,
                        "subject": subject.id, "relation": f.relation, "split": split})
        return out

    # ---- knowledge update -------------------------------------------------------------------
    def set_fact(self, subject: str, relation: str, value: str | int) -> list[str]:
        """Change one fact, re-render the documents that state it; returns the ids of changed documents."""
        if subject not in self.entities:
            raise KeyError(f"no entity {subject!r} in this world")
        if relation not in RELATIONS:
            raise KeyError(f"unknown relation {relation!r}; valid: {', '.join(RELATIONS)}")
        fact = self.fact_of(subject, relation)
        kind, value = _value_kind(relation), str(value)
        if kind in ("date", "year"):
            m = re.fullmatch(r"\d{3,4}" if kind == "year" else r"(\d{1,2}) ([A-Z][a-z]+) \d{3,4}", value)
            if not m or (kind == "date" and (m.group(2) not in MONTHS or not 1 <= int(m.group(1)) <= 31)):
                example = "1870" if kind == "year" else "3 May 1870"
                raise ValueError(f"{relation} takes a {kind} like {example!r}, got {value!r}")
        elif value not in self.entities or self.entities[value].kind != kind:
            raise ValueError(f"{relation} takes the id of a {kind} entity, got {value!r}")
        before = {d for f in self._by_subject[subject] for d in self.homes(f)}
        fact.value = value
        self._index_facts()
        after = {d for f in self._by_subject[subject] for d in self.homes(f)}
        for q in self.questions:
            if q["fact"] == fact.id:
                q["answers"] = [self.entities[value].name if value in self.entities else value]
        changed = []  # only the documents that state one of the subject's facts, before or after, can change
        for doc_id in sorted(before | after):
            if doc_id not in self._doc_index:
                continue
            i, doc = self._doc_index[doc_id], self.documents[self._doc_index[doc_id]]
            new = self.render(doc.id)
            if new.text != doc.text:
                self.documents[i] = new
                changed.append(doc.id)
        return changed

    def document(self, doc_id: str) -> Document:
        return self.documents[self._doc_index[doc_id]]

    def docs_stating(self, fact_id: str) -> list[str]:
        """Ids of the documents with a sentence that states this fact (its gold documents)."""
        return [d.id for d in self.documents if any(fact_id in s.facts for s in d.sentences)]

    # ---- files ------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write world.json, entities.jsonl, facts.jsonl, documents.jsonl and questions.jsonl."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "entities.jsonl", (asdict(e) for e in self.entities.values()))
        write_jsonl(out / "facts.jsonl", (asdict(f) for f in self.facts.values()))
        write_jsonl(out / "documents.jsonl", (asdict(d) for d in self.documents))
        write_jsonl(out / "questions.jsonl", self.questions)
        meta = {"seed": self.seed, "config": self.config, "entities": len(self.entities),
                "facts": len(self.facts), "documents": len(self.documents), "questions": len(self.questions)}
        write_jsonl(out / "world.jsonl", [meta])  # one line, written last: its presence marks a complete world
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> "World":
        """Read a world written by `save` (documents are re-rendered from the facts and checked)."""
        out = Path(out_dir)
        if not (out / "world.jsonl").exists():
            raise FileNotFoundError(f"{out} holds no complete world (world.jsonl missing); run `realm-lite world`")
        meta = next(read_jsonl(out / "world.jsonl", required=("seed", "config")))
        entities = [Entity(**r) for r in read_jsonl(out / "entities.jsonl", required=("id", "kind", "name", "attr"))]
        facts = [Fact(**r) for r in read_jsonl(out / "facts.jsonl", required=("id", "subject", "relation", "value"))]
        world = cls(meta["seed"], entities, facts, config=meta["config"])
        saved = {r["id"]: r["text"] for r in read_jsonl(out / "documents.jsonl", required=("id", "text"))}
        for d in world.documents:
            if saved.get(d.id) != d.text:
                raise ValueError(f"{out / 'documents.jsonl'}: document {d.id} does not match its facts")
        return world

    def summary(self) -> dict:
        n_tokens = sum(len(d.text.split()) for d in self.documents)
        return {"entities": len(self.entities), "facts": len(self.facts),
                "heldout_facts": sum(f.split == "heldout" for f in self.facts.values()),
                "documents": len(self.documents), "words_per_doc": round(n_tokens / len(self.documents), 1),
                "mentions": sum(len(d.mentions) for d in self.documents),
                "questions": {s: sum(q["split"] == s for q in self.questions) for s in ("train", "dev", "test")}}

