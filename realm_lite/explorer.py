"""The retrieval explorer: what REALM retrieves for a query, and why, as ipywidgets (realm_lite.explain). Notebook 08.

    from realm_lite.explorer import Explorer
    Explorer().show()                       # in a notebook; `realm-lite explore` serves the same app with Voilà

Type a sentence with `[MASK]` (or `[the answer]` in brackets), pick a held-out sentence, or ask a question; choose
a model (the shipped REALM, its ICT-only warm start, or any run or export directory) and optionally a second one
to compare; read the top-k blocks with f(x,z), p(z|x), p(y|z,x), RU(z) and r(z); edit a fact of the world and ask
again. Every widget is an attribute, so tests and notebooks drive it as a person would: set `text.value`, call
`ask.click()`, read `results` or the rendered `output_a.value`.

Placement: the face (beside cli.py); it calls realm_lite.explain and realm_lite.export, and nothing imports it.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import ipywidgets as w

from realm_lite.explain import Explanation, edit_fact, explain_masked, explain_question

SHIPPED_MODELS = {  # label: (shipped model or directory, pre-training weights, QA system)
    "world-cpu: REALM": ("world-cpu", "realm", "realm"),
    "world-cpu: before REALM (warm start; QA: ICT only)": ("world-cpu", "warmstart", "ict"),
}
ENV_MODELS = "REALM_LITE_EXPLORER_MODELS"  # more directories, separated by os.pathsep (`realm-lite explore --model`)
NONE = "(none)"
STYLE = """<style>
.realm-result {font-family: sans-serif; font-size: 13px; margin: 4px 0}
.realm-result table {border-collapse: collapse; width: 100%}
.realm-result th, .realm-result td {border-bottom: 1px solid #ddd; padding: 2px 6px; vertical-align: top;
  text-align: right; line-height: 1.35}
.realm-result .block {text-align: left; max-width: 640px; white-space: normal}
.realm-result mark {background: #ffe08a}
.realm-result u {text-decoration-color: #7aa7e0; text-decoration-thickness: 2px}
.realm-result .bar {display: inline-block; height: 9px}
.realm-result .ok {color: #1a7f37} .realm-result .bad {color: #c62828}
</style>"""


@dataclass
class ModelChoice:
    """A model the explorer can ask: a pre-trained REALM (masked sentences) and a QA system (questions), loaded
    on first use and kept."""

    label: str
    path: str
    weights: str = "realm"
    system: str | None = "realm"
    device: str = "cpu"
    _pre: object = field(default=None, repr=False)
    _qa: object = field(default=None, repr=False)

    @classmethod
    def from_directory(cls, path, device="cpu") -> "ModelChoice":
        """A run or export directory: a pre-training run or export (masked sentences, and its QA system when the
        export holds one) or a QA run (questions only); an error naming what the directory is not."""
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such directory (give a pre-training run, a QA run or an export)")
        if (p / "qa.json").is_file():
            return cls(str(p), str(p), weights="", system=None, device=device)  # its own system, no masked LM
        if (p / "export.json").is_file():
            import json

            systems = json.loads((p / "export.json").read_text()).get("qa", [])
            return cls(str(p), str(p), "realm", "realm" if "realm" in systems else (systems or [None])[0], device)
        if (p / "checkpoint.pt").is_file():
            return cls(str(p), str(p), "realm", None, device)
        raise FileNotFoundError(f"{p} is not a realm-lite run or export: it has no checkpoint.pt, qa.json or "
                                f"export.json")

    @property
    def masked(self) -> bool:
        return bool(self.weights)

    def pre(self):
        """The pre-trained REALM (realm_lite.export.Pretrained)."""
        if not self.masked:
            raise ValueError(f"{self.label} is a QA run: it answers questions, not masked sentences")
        if self._pre is None:
            from realm_lite.export import load_pretrained

            self._pre = load_pretrained(self.path, self.device, self.weights)
        return self._pre

    def qa(self):
        """The fine-tuned QA system (realm_lite.qa.QASystem)."""
        if self.system is None and self.masked:
            raise ValueError(f"{self.label} holds no fine-tuned QA system: it fills in masked sentences only")
        if self._qa is None:
            from realm_lite.export import load_qa

            self._qa = load_qa(self.path, self.system, self.device)
        return self._qa

    def loaded(self) -> list:
        return [m for m in (self._pre, self._qa) if m is not None]


class Explorer:
    """The widgets and what they do. `show()` lays them out; `run()` is what the Ask button does."""

    def __init__(self, models: dict | None = None, extra: list | None = None, device="cpu", n_examples: int = 40):
        self.device, self.n_examples = device, n_examples
        self.models = {label: ModelChoice(label, *spec, device=device)
                       for label, spec in (models or SHIPPED_MODELS).items()}
        env = [p for p in os.environ.get(ENV_MODELS, "").split(os.pathsep) if p]
        for path in [*(extra or []), *env]:
            m = ModelChoice.from_directory(path, device)
            self.models[m.label] = m
        self.edits: list[tuple] = []  # (subject, relation, value): replayed on a model loaded later
        self._synced: dict[int, int] = {}  # id(loaded model) -> how many of `edits` its world has had
        self.results: dict[str, Explanation] = {}
        self.mode = w.ToggleButtons(options=["masked sentence", "question"], value="masked sentence")
        self.text = w.Text(placeholder="a sentence with [MASK], or [the answer] in brackets",
                           layout=w.Layout(width="70%"), continuous_update=False)
        self.pick = w.Dropdown(description="or pick", layout=w.Layout(width="70%"))
        labels = list(self.models)
        self.model_a = w.Dropdown(options=labels, value=labels[0], description="model", layout=w.Layout(width="34%"))
        self.model_b = w.Dropdown(options=[NONE] + labels, value=NONE, description="compare",
                                  layout=w.Layout(width="34%"))
        self.path = w.Text(placeholder="a run or export directory", layout=w.Layout(width="40%"))
        self.add = w.Button(description="add model")
        self.k = w.IntSlider(value=8, min=2, max=16, description="k")
        self.exclude = w.Checkbox(value=True, description="exclude trivial retrieval")
        self.ask = w.Button(description="Ask", button_style="primary")
        self.status = w.HTML()
        self.output_a, self.output_b = w.HTML(), w.HTML()
        self.subject = w.Combobox(placeholder="subject (an entity's name)", ensure_option=False)
        self.relation = w.Dropdown(options=[], description="relation")
        self.value = w.Text(placeholder="new value (a name, or a date / year)")
        self.change = w.Button(description="change fact")
        self.fact_status = w.HTML()
        self._picked: dict[str, object] = {}  # the text a pick put in the box -> the held-out Query / QAExample
        self.mode.observe(lambda _: self._fill_picks(), "value")
        self.model_a.observe(lambda _: self._fill_picks(), "value")
        self.pick.observe(self._on_pick, "value")
        self.ask.on_click(lambda _: self.run())
        self.text.observe(lambda ch: self.run() if ch["new"] else None, "value")  # Enter in the box asks
        self.add.on_click(lambda _: self.add_model(self.path.value))
        self.change.on_click(lambda _: self.edit(self.subject.value, self.relation.value, self.value.value))
        self._fill_picks()
        self._fill_fact_editor()

    # ---- layout --------------------------------------------------------------------------------------
    def show(self) -> w.Widget:
        """The whole app as one widget."""
        return w.VBox([
            w.HTML(STYLE + "<b>REALM retrieval explorer</b>: x -> top-k blocks z -> p(y|x). "
                   "r(z) &gt; 0: the masked-LM loss would raise f(x,z); &lt; 0: lower it."),
            self.mode, w.HBox([self.text, self.ask]), self.pick,
            w.HBox([self.model_a, self.model_b]), w.HBox([self.k, self.exclude]),
            w.HBox([self.path, self.add]), self.status,
            w.HBox([self.output_a, self.output_b]),
            w.HTML("<b>Edit a fact</b> of the world, re-embed the blocks that state it, ask again:"),
            w.HBox([self.subject, self.relation, self.value, self.change]), self.fact_status,
        ])

    # ---- actions -------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Ask the chosen model(s) the query in the text box; render and return {label: Explanation}."""
        text = self.text.value.strip()
        self.results = {}
        outputs = [self.output_a, self.output_b]
        for out in outputs:
            out.value = ""
        if not text:
            self.status.value = "type a query or pick one"
            return self.results
        labels = [self.model_a.value] + ([self.model_b.value] if self.model_b.value != NONE else [])
        for label, out in zip(labels, outputs):
            try:
                self.results[label] = e = self._explain(self.models[label], text)
                out.value = render(label, e)
            except (ValueError, KeyError, FileNotFoundError) as err:
                out.value = f"<div class='realm-result'><b>{html.escape(label)}</b>: " \
                            f"<span class='bad'>{html.escape(str(err))}</span></div>"
        for out in outputs:
            out.layout.width = f"{100 // len(labels) - 1}%" if out.value else "0"
        self.status.value = ""
        return self.results

    def _explain(self, model: ModelChoice, text: str) -> Explanation:
        picked = self._picked.get(text)
        if self.mode.value == "question":
            answers = picked.answers if picked is not None else None
            return explain_question(self._get(model, "qa"), text, answers, k=min(self.k.value, 10))
        pre = self._get(model, "pre")
        if picked is not None and _same_corpus(picked[1], pre):  # a held-out sentence of this corpus: its Query
            return explain_masked(pre, picked[0], self.k.value, self.exclude.value)
        return explain_masked(pre, text, self.k.value, self.exclude.value)

    def _get(self, model: ModelChoice, kind: str):
        """model.pre() or model.qa(), with the edits made so far applied to its world (read from disk as it was)."""
        obj = model.pre() if kind == "pre" else model.qa()
        if obj.world is not None:
            for edit in self.edits[self._synced.get(id(obj), 0):]:
                edit_fact(obj, *edit)
            self._synced[id(obj)] = len(self.edits)
        return obj

    def add_model(self, path: str) -> ModelChoice | None:
        """A run or export directory as one more model to choose."""
        try:
            m = ModelChoice.from_directory(path.strip(), self.device)
        except FileNotFoundError as err:
            self.status.value = f"<span class='bad'>{html.escape(str(err))}</span>"
            return None
        self.models[m.label] = m
        self.model_a.options = list(self.models)
        self.model_b.options = [NONE] + list(self.models)
        self.status.value = f"added {html.escape(m.label)}"
        return m

    def edit(self, subject: str, relation: str, value: str) -> list[dict]:
        """Change a fact in the world of every loaded model (and of models loaded later); re-embed what changed."""
        loaded = [obj for m in self.models.values() for obj in m.loaded() if obj.world is not None]
        if not loaded:  # nothing loaded yet: load the first model, so that the edit is checked now
            model = self.models[self.model_a.value]
            loaded = [self._get(model, "pre" if model.masked else "qa")]
        done = []
        try:
            for obj in loaded:
                done.append(edit_fact(obj, subject, relation, value))
                self._synced[id(obj)] = len(self.edits) + 1
        except (ValueError, KeyError) as err:
            message = err.args[0] if isinstance(err, KeyError) else err  # a KeyError's str() adds quotes
            self.fact_status.value = f"<span class='bad'>{html.escape(str(message))}</span>"
            if done:  # a world that took the edit keeps it: the edit stands for every model
                self.edits.append((subject, relation, value))
            return done
        self.edits.append((subject, relation, value))
        d = done[0]
        self.fact_status.value = (f"{html.escape(d['subject'])} {relation}: {html.escape(d['old'])} -> "
                                  f"<b>{html.escape(d['new'])}</b>; {len(d['documents'])} documents re-rendered, "
                                  f"{d['blocks_reembedded']} blocks re-embedded in {d['seconds']:.2f} s "
                                  f"({len(done)} loaded models). Ask again.")
        self._fill_picks()
        return done

    # ---- picks ---------------------------------------------------------------------------------------
    def _fill_picks(self) -> None:
        """Held-out sentences (masked mode) or test questions (question mode) of the first model."""
        model = self.models[self.model_a.value]
        self._picked = {}
        options = [("-", None)]
        try:
            if self.mode.value == "question":
                from realm_lite.qa_data import load_qa as load_questions

                qa = self._get(model, "qa") if not model.masked or model.system else None
                if qa is not None and qa.world is not None:
                    for ex in load_questions("world", "test", world=qa.world, cfg=qa.cfg)[:self.n_examples]:
                        self._picked[ex.question] = ex
                        options.append((f"{ex.question}  ({ex.answers[0]})", ex.question))
                self.text.placeholder = "a question"
            else:
                pre = self._get(model, "pre")
                for q in pre.heldout_queries(self.n_examples):
                    a, b = q.example.span
                    text = q.example.text[:a] + "[" + q.example.text[a:b] + "]" + q.example.text[b:]
                    self._picked[text] = (q, pre)
                    options.append((q.example.text[:a] + "___" + q.example.text[b:], text))
                self.text.placeholder = "a sentence with [MASK], or [the answer] in brackets"
        except (ValueError, FileNotFoundError) as err:
            self.status.value = f"<span class='bad'>{html.escape(str(err))}</span>"
        self.pick.options = options
        self.pick.value = None

    def _on_pick(self, change) -> None:
        if change["new"] is None:
            return
        picked = self._picked.get(change["new"])
        fact_id = (getattr(picked, "meta", None) or {}).get("fact")
        world = self._get(self.models[self.model_a.value], "qa").world if fact_id else None
        if world is not None and fact_id in world.facts:  # the fact a picked question asks about, ready to edit
            fact = world.facts[fact_id]
            self.subject.value = world.entities[fact.subject].name
            self.relation.value = fact.relation
        self.text.value = change["new"]  # asks (the text box's observer)

    def _fill_fact_editor(self) -> None:
        from realm_lite.world import RELATIONS

        self.relation.options = list(RELATIONS)
        self.relation.value = next(iter(RELATIONS))
        model = self.models[self.model_a.value]
        obj = next(iter(model.loaded()), None)
        if obj is not None and obj.world is not None:
            self.subject.options = sorted(e.name for e in obj.world.entities.values())


def _same_corpus(a, b) -> bool:
    """Two loaded models over the same blocks in the same rows (a held-out Query names its blocks by row)."""
    return a is b or (len(a.blocks) == len(b.blocks) and all(x.id == y.id and x.text == y.text
                                                               for x, y in zip(a.blocks, b.blocks)))


# ---- rendering -------------------------------------------------------------------------------------------
def render(label: str, e: Explanation) -> str:
    """An Explanation as an HTML table, one `realm-row` per candidate z, best p(z|x) first."""
    verdict = ("" if e.correct is None else " <span class='ok'>✓</span>" if e.correct else
               " <span class='bad'>✗</span>")
    target = f" &nbsp; y = {html.escape(e.target)}" if e.target is not None else ""
    head = (f"<div class='realm-result'><b>{html.escape(label)}</b> &nbsp; {e.seconds * 1000:.0f} ms<br>"
            f"x: {html.escape(e.query)}<br>prediction: <b class='prediction'>{html.escape(e.prediction)}</b>"
            f"{verdict}{target}" + (f"<br><i>{html.escape(e.note)}</i>" if e.note else ""))
    if e.kind == "masked":
        cols = ["#", "block z", "f(x,z)", "p(z|x)", "p(y|z,x)", "RU(z)", "r(z)"]
    else:
        cols = ["#", "block z (best span marked)", "f(x,z)", "p(z|x)", "p(s|z,x)"]
    rows = []
    for i, c in enumerate(e.candidates):
        gold = " <span class='ok' title='gold block'>★</span>" if c.gold else ""
        cells = [str(i + 1), f"<b>{html.escape(c.title)}</b>{gold}<br>{_marked(c.text, c.marks)}"
                 + (f"<br>p(y|z,x) predicts <i>{html.escape(c.prediction)}</i>" if c.prediction else ""),
                 f"{c.f:.2f}", f"{c.p_z:.3f}", f"{c.p_y:.3f}" if c.p_y is not None else ""]
        if e.kind == "masked":
            size = min(60, int(abs(c.r) * 60))
            color = "#1a7f37" if c.r > 0 else "#c62828"
            cells += [f"{c.ru:+.2f}", f"<span class='bar' style='width:{size}px;background:{color}'></span> "
                                      f"{'↑' if c.r > 0 else '↓'} {c.r:+.3f}"]
        rows.append("<tr class='realm-row'>" + "".join(
            f"<td class='block'>{v}</td>" if j == 1 else f"<td>{v}</td>" for j, v in enumerate(cells)) + "</tr>")
    table = "<table><tr>" + "".join(f"<th class='block'>{c}</th>" if j == 1 else f"<th>{c}</th>"
                                    for j, c in enumerate(cols)) + "</tr>" + "".join(rows) + "</table>"
    return head + table + "</div>"


def _marked(text: str, marks: list) -> str:
    """Block text with predicted spans in <mark> and salient spans underlined (nested marks: the first wins)."""
    out, pos = [], 0
    for start, end, kind in sorted(marks, key=lambda m: (m[0], m[2] != "prediction")):
        if start < pos:
            continue
        tag = "mark" if kind == "prediction" else "u"
        out += [html.escape(text[pos:start]), f"<{tag}>", html.escape(text[start:end]), f"</{tag}>"]
        pos = end
    return "".join(out + [html.escape(text[pos:])])


def app_notebook() -> Path:
    """The one-cell notebook that Voilà serves (`realm-lite explore`)."""
    return Path(__file__).parent / "explorer_app.ipynb"
