"""`modal-core convert` / `export` (the images plugin's commands) and `understand` / `generate` on a tiny transformers Janus."""

from __future__ import annotations

from modal_core.cli import main
from modal_core_images.janus.keys import modal_to_hf

from .tiny_janus import sample_image


def test_convert_understand_generate_export(converted, janus_plugins, tmp_path, capsys):
    _, hf_dir, _ = converted
    out = tmp_path / "modal"
    assert main(["convert", str(hf_dir), "--from", "hf-janus", "--to", str(out), "--dtype", "float32"], plugins=janus_plugins) == 0
    image = tmp_path / "picture.png"
    sample_image(3).save(image)
    assert (
        main(["understand", str(out), "--image", str(image), "--question", "what is it?", "--max-new-tokens", "4"], plugins=janus_plugins)
        == 0
    )
    assert main(["generate", str(out), "--prompt", "a red circle", "--n", "2", "--out", str(tmp_path / "png")], plugins=janus_plugins) == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 2
    greedy = ["generate", str(out), "--prompt", "a red circle", "--n", "2", "--temperature", "0"]
    for decoding in ("ar", "sjd"):
        assert main([*greedy, "--decoding", decoding, "--out", str(tmp_path / decoding)], plugins=janus_plugins) == 0
    assert [p.read_bytes() for p in sorted((tmp_path / "sjd").glob("*.png"))] == [
        p.read_bytes() for p in sorted((tmp_path / "ar").glob("*.png"))
    ]  # greedy speculative decoding draws the autoregressive images
    assert main(["export", str(out), str(tmp_path / "hf"), "--max-shard-size", "1MB"], plugins=janus_plugins) == 0
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "processor_config.json").is_file()


def test_convert_refuses_a_folder_that_is_not_janus(janus_plugins, tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2}')
    assert main(["convert", str(tmp_path), "--from", "hf-janus", "--to", str(tmp_path / "out")], plugins=janus_plugins) == 1
    assert "expected a JanusConfig" in capsys.readouterr().err
    assert modal_to_hf("backbone.lm_head.weight") == "lm_head.weight"
