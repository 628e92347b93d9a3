"""realm_lite.config: presets, overrides, CLI override parsing, config.json round trip."""
import dataclasses
import json

import pytest

from realm_lite.config import PRESETS, Config, ConfigError, get_config, parse_overrides

FIELDS = {f.name for f in dataclasses.fields(Config)}


# ---- presets and keyword overrides -----------------------------------------------------------
@pytest.mark.parametrize("name", ["quick", "cpu", "cpu-long", "cpu-paper", "cpu-text", "full", "full-smoke"])
def test_presets_exist_and_apply_their_values(name):
    cfg = get_config(name)
    assert cfg.preset == name
    for key, value in PRESETS[name].items():
        assert getattr(cfg, key) == value


def test_presets_differ_in_scale():
    quick, cpu, full = get_config("quick"), get_config("cpu"), get_config("full")
    assert quick.world_entities < cpu.world_entities < full.world_entities
    assert full.block_len == 288  # the paper's block length


def test_full_smoke_is_full_with_an_offline_checkpoint_and_a_few_steps():
    full, smoke = get_config("full"), get_config("full-smoke")
    steps = {"world_entities", "ict_steps", "ict_batch", "realm_steps", "batch_size", "warmup_steps", "refresh_every",
             "checkpoint_every", "eval_queries", "log_every", "progress", "qa_retrieve", "qa_steps", "qa_batch",
             "qa_warmup_steps"}
    changed = {k for k, v in smoke.to_dict().items() if v != full.to_dict()[k]}
    assert changed == steps | {"preset", "tokenizer", "backbone"}  # lengths, stages and learning rates are full's
    assert (smoke.backbone, smoke.tokenizer) == ("minilm", "")  # MiniLM's own vocabulary
    assert smoke.refresh_every < smoke.realm_steps and smoke.checkpoint_every < smoke.realm_steps


def test_cpu_is_the_small_scale_recipe_and_cpu_paper_the_papers():
    cpu, paper, quick = get_config("cpu"), get_config("cpu-paper"), get_config("quick")
    assert (cpu.warm_start, paper.warm_start) == ("salient", "ict")
    assert cpu.reader_warmup_steps > 0 and paper.reader_warmup_steps == 0
    assert quick.warm_start == cpu.warm_start and quick.reader_warmup_steps > 0  # quick: the same recipe, shrunk
    assert quick.reader_warmup_z == cpu.reader_warmup_z == "own-then-mixed"
    assert quick.reader_warmup_own_frac == cpu.reader_warmup_own_frac == 1 / 3  # a longer mixed phase
    assert quick.reader_lr == cpu.reader_lr == 0 < cpu.reader_warmup_lr  # in REALM the warmed-up reader is frozen
    assert quick.retriever_lr == cpu.retriever_lr
    assert quick.dropout == cpu.dropout == 0 < paper.dropout  # the reader copies sooner without it
    assert (cpu.world_entities, cpu.block_len, cpu.k) == (paper.world_entities, paper.block_len, paper.k)
    long = get_config("cpu-long")  # the same stages, longer, with dropout
    assert (long.warm_start, long.reader_warmup_z, long.reader_lr) == (cpu.warm_start, cpu.reader_warmup_z, 0)
    assert (long.ict_steps, long.reader_warmup_steps, long.realm_steps) > (cpu.ict_steps, cpu.reader_warmup_steps,
                                                                           cpu.realm_steps)


def test_cpu_text_is_full_from_minilm_made_small_for_real_text():
    """cpu-text: the offline MiniLM as every encoder, its own geometry (no projection, [CLS]), no retriever warm
    start (the QA baseline "ict" is the pretrained towers), a reader warm-up for the missing masked-LM head."""
    text, full = get_config("cpu-text"), get_config("full")
    assert (text.backbone, text.tokenizer, text.pooling, text.proj_dim) == ("minilm", "", "cls", 0)
    assert (text.warm_start, text.ict_steps) == ("none", 0)
    assert text.reader_warmup_steps > 0 and text.reader_head_lr > text.reader_warmup_lr and text.reader_lr == 0
    assert text.realm_steps < full.realm_steps and text.qa_steps < full.qa_steps and text.qa_read < full.qa_read
    assert text.eval_queries > 0  # not all 2,571 held-out sentences: minutes on a CPU


def test_default_preset_is_quick():
    assert get_config() == get_config("quick")


def test_keyword_overrides():
    cfg = get_config("cpu", world_entities=3000, seed=7, masking="random-span")
    assert (cfg.world_entities, cfg.seed, cfg.masking) == (3000, 7, "random-span")
    assert cfg.preset == "cpu"
    assert cfg.block_len == PRESETS["cpu"]["block_len"]  # untouched keys keep the preset's value


def test_replace_returns_a_modified_copy():
    cfg = get_config("quick")
    other = cfg.replace(seed=3)
    assert other.seed == 3 and cfg.seed == 0
    with pytest.raises(ConfigError, match="world_entities"):
        cfg.replace(bogus_key=1)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_config().seed = 5


def test_unknown_preset_lists_valid_presets():
    with pytest.raises(ConfigError) as e:
        get_config("huge")
    msg = str(e.value)
    assert "huge" in msg
    for name in ("quick", "cpu", "cpu-long", "cpu-paper", "cpu-text", "full", "full-smoke"):
        assert name in msg


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        get_config("quick", world_size=10)
    msg = str(e.value)
    assert "world_size" in msg
    for key in ("world_entities", "block_len", "query_len", "masking", "seed"):
        assert key in msg


@pytest.mark.parametrize("frac", [-0.1, 1.5])
def test_reader_warmup_own_frac_outside_0_1_is_an_error(frac):
    with pytest.raises(ConfigError, match="reader_warmup_own_frac"):
        get_config("quick", reader_warmup_own_frac=frac)


def test_negative_reader_backbone_layers_is_an_error():
    with pytest.raises(ConfigError, match="reader_backbone_layers"):
        get_config("quick", reader_backbone_layers=-1)


def test_config_error_is_a_value_error():
    # the CLI catches ValueError and turns it into exit status 2
    assert issubclass(ConfigError, ValueError)


# ---- parse_overrides ---------------------------------------------------------------------------
def test_parse_overrides_types_values_by_field():
    out = parse_overrides(["seed=3", "mask_prob=0.25", "lowercase=false", "masking=random-token",
                           "tokenizer=minilm"])
    assert out == {"seed": 3, "mask_prob": 0.25, "lowercase": False, "masking": "random-token",
                   "tokenizer": "minilm"}
    assert type(out["seed"]) is int
    assert type(out["mask_prob"]) is float
    assert type(out["lowercase"]) is bool


@pytest.mark.parametrize("raw,value", [("true", True), ("True", True), ("1", True),
                                       ("false", False), ("FALSE", False), ("0", False)])
def test_parse_overrides_bools(raw, value):
    assert parse_overrides([f"lowercase={raw}"]) == {"lowercase": value}


def test_parse_overrides_int_written_as_float_for_float_field():
    assert parse_overrides(["heldout_fraction=1"]) == {"heldout_fraction": 1.0}


def test_parse_overrides_value_may_contain_equals_sign():
    assert parse_overrides(["tokenizer=a=b"]) == {"tokenizer": "a=b"}


def test_parse_overrides_json_fields():
    out = parse_overrides(['notes={"why": "test"}', "question_splits=[0.7, 0.2, 0.1]"])
    assert out["notes"] == {"why": "test"}
    assert list(out["question_splits"]) == [0.7, 0.2, 0.1]


@pytest.mark.parametrize("pair,words", [
    ("seed=abc", ["seed=abc", "int"]),
    ("seed=1.5", ["seed=1.5", "int"]),
    ("mask_prob=lots", ["mask_prob", "float"]),
    ("lowercase=maybe", ["lowercase", "bool"]),
    ("notes={not json", ["notes", "dict"]),
])
def test_parse_overrides_bad_value(pair, words):
    with pytest.raises(ConfigError) as e:
        parse_overrides([pair])
    for w in words:
        assert w in str(e.value)


def test_parse_overrides_needs_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["seed"])


def test_parse_overrides_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        parse_overrides(["colour=blue"])
    assert "colour" in str(e.value) and "world_entities" in str(e.value)


def test_parse_overrides_feed_get_config():
    cfg = get_config("quick", **parse_overrides(["world_entities=120", "seed=9"]))
    assert (cfg.world_entities, cfg.seed) == (120, 9)


# ---- save / load -------------------------------------------------------------------------------
def test_save_then_load_round_trip(tmp_path):
    cfg = get_config("cpu", seed=11, mask_prob=0.2, lowercase=False, notes={"run": "x"},
                     question_splits=(0.6, 0.2, 0.2))
    path = cfg.save(tmp_path / "run")
    assert path == tmp_path / "run" / "config.json"
    assert path.exists()
    data = json.loads(path.read_text())
    assert set(data) == FIELDS
    assert data["seed"] == 11 and data["preset"] == "cpu"
    assert Config.load(path) == cfg
    assert Config.load(tmp_path / "run") == cfg  # a directory means its config.json
    assert isinstance(Config.load(path).question_splits, tuple)


def test_load_reads_an_older_boolean_embed_bf16(tmp_path):
    path = get_config().save(tmp_path)
    for old, new in ((True, "on"), (False, "off")):
        path.write_text(json.dumps({**json.loads(path.read_text()), "embed_bf16": old}))
        assert Config.load(path).embed_bf16 == new
    with pytest.raises(ConfigError, match="embed_bf16.*auto, on, off"):
        get_config(embed_bf16="yes")


def test_save_leaves_no_temporary_files(tmp_path):
    get_config().save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_load_missing_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "config.json"
    with pytest.raises(FileNotFoundError) as e:
        Config.load(missing)
    assert str(missing) in str(e.value)


def test_load_bad_json_names_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"seed": 1,')
    with pytest.raises(ValueError) as e:
        Config.load(path)
    assert str(path) in str(e.value)
    assert "JSON" in str(e.value)


def test_load_unknown_key_names_file_and_key(tmp_path):
    path = get_config().save(tmp_path)
    data = json.loads(path.read_text())
    data["block_length"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        Config.load(path)
    assert str(path) in str(e.value)
    assert "block_length" in str(e.value)
    assert "block_len" in str(e.value)  # the valid keys are listed


def test_values_are_type_checked_and_choices_validated(tmp_path):
    with pytest.raises(ConfigError, match="'block_len' must be int"):
        get_config("quick", block_len="400")
    with pytest.raises(ConfigError, match="warm_start"):
        get_config("quick", warm_start="bm25")
    with pytest.raises(ConfigError, match="k=1"):
        get_config("quick", k=1)
    path = tmp_path / "config.json"
    d = get_config("quick").to_dict()
    d["realm_steps"] = "40"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="realm_steps"):
        Config.load(path)
    assert get_config("quick", reader_lr=1).reader_lr == 1  # an int is a fine float


def test_load_out_of_range_value_names_file_and_key(tmp_path):
    path = get_config().save(tmp_path)
    path.write_text(json.dumps({**json.loads(path.read_text()), "batch_size": -3}))
    with pytest.raises(ConfigError) as e:
        Config.load(path)
    assert str(path) in str(e.value) and "batch_size=-3" in str(e.value)
