"""The task registry is the one list of tasks: modeling, export specs, runtime classes, pipelines, the CLI
and the transformers integration all come from it."""

import pytest
import transformers

from support.checkpoints import small_config
from yoso_deploy import tasks
from yoso_deploy.iospec import io_spec
from yoso_deploy.modeling import TASK_ALIASES, TASK_CLASSES, canonical_task
from yoso_deploy.runtime.models import TASK_MODELS
from yoso_deploy.runtime.pipelines import pipeline_class

SIX = ["base", "mlm", "sequence-classification", "multiple-choice", "token-classification", "qa"]


def test_six_tasks_and_their_aliases():
    assert list(tasks.TASKS) == SIX
    for alias, task in {"question-answering": "qa", "fill-mask": "mlm", "masked-lm": "mlm", "ner": "token-classification",
                        "text-classification": "sequence-classification", "sentiment-analysis": "sequence-classification",
                        "feature-extraction": "base", "multiple_choice": "multiple-choice", " QA ": "qa"}.items():
        assert tasks.canonical_task(alias) == task == canonical_task(alias)
    with pytest.raises(tasks.UnknownTaskError, match="unknown task 'summarization'; choose one of: base, mlm"):
        tasks.canonical_task("summarization")
    assert TASK_ALIASES == tasks.ALIASES


def test_every_layer_uses_the_registry():
    for name, t in tasks.TASKS.items():
        assert TASK_CLASSES[name] is getattr(transformers, t.transformers_class)  # modeling
        assert getattr(transformers, t.auto_class)  # the auto class exists
        assert TASK_MODELS[name].__name__ == t.runtime_class and TASK_MODELS[name].task == name  # runtime
        assert pipeline_class(name).__name__ == t.pipeline and pipeline_class(name).task == name  # pipelines
        cfg = small_config()
        spec = io_spec(cfg, name)  # export
        assert [o.name for o in spec.outputs] == t.output_names
        assert all(len(i.dims) == len(t.input_dims) for i in spec.inputs)
        assert tasks.task_for_architectures([t.transformers_class]) == name
    assert tasks.task_for_architectures(["BertForMaskedLM", "YosoForMaskedLM"]) == "mlm"
    assert tasks.task_for_architectures(None) is None
    from yoso_deploy import hf

    assert [c.__name__ for c in hf.HF_MODELS.values()] == [f"Ort{t.transformers_class}" for t in tasks.TASKS.values()]


def test_output_dims_come_from_the_config():
    cfg = small_config(num_labels=7, type_vocab_size=2)
    spec = io_spec(cfg, "token-classification")
    assert spec.outputs[0].dims == ["batch", "sequence", 7]
    assert spec.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert io_spec(cfg, "base").outputs[0].dims == ["batch", "sequence", cfg.hidden_size]
    assert io_spec(cfg, "mlm").outputs[0].dims == ["batch", "sequence", cfg.vocab_size]
    assert io_spec(cfg, "multiple-choice").inputs[0].dims == ["batch", "num_choices", "sequence"]
    assert tasks.get("qa").output_dims(tasks.get("qa").outputs[0], {"hidden_size": 8}) == ["batch", "sequence"]
    debug = io_spec(cfg, "qa", debug_codes=True).debug_outputs
    assert len(debug) == 2 * cfg.num_hidden_layers and debug[0].dims == ["batch", cfg.num_attention_heads, "sequence",
                                                                          cfg.num_hash]


def test_cli_help_lists_the_registry_tasks():
    from click.testing import CliRunner

    from yoso_deploy.cli.main import main

    out = "".join(CliRunner().invoke(main, ["export", "--help"]).output.split())  # help text is wrapped
    want = f"Model head: {', '.join(tasks.TASKS)} (aliases: {', '.join(sorted(tasks.ALIASES))})"
    assert "".join(want.split()) in out
