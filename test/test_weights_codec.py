"""The weights codec and the strict loader, without ROS: every bad payload is a clean rejection."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hilserl.policies.config import PolicyConfig
from hilserl.policies.inference import InferencePolicy
from hilserl.weights.codec import WeightsError, decode_weights, encode_weights, read_safetensors, tensor_digest
from hilserl.weights.loader import WeightsReceiver, empty_policy, inference_digest

# Small networks keep the fuzzing fast; the checks do not depend on size.
SMALL = PolicyConfig(image_size=24, hidden_dim=16, feature_dim=8, encoder_channels=4, frame_stack=2)


def make_policy(config: PolicyConfig = SMALL, seed: int = 0) -> InferencePolicy:
    torch.manual_seed(seed)
    return InferencePolicy(config)


def payload_for(policy: InferencePolicy, version: int = 1, run_id: str = "run-a", state=None) -> bytes:
    return encode_weights(state if state is not None else policy.state_dict(), config=policy.config,
                          weights_version=version, learner_step=10 * version, run_id=run_id)[0]


@pytest.fixture(scope="module")
def good_payload() -> bytes:
    return payload_for(make_policy())


def test_round_trip_is_exact_and_zero_copy(good_payload):
    policy = make_policy()
    buffer = bytearray(good_payload)
    meta, tensors = decode_weights(buffer)
    assert meta.weights_version == 1 and meta.run_id == "run-a" and meta.config == SMALL
    assert set(tensors) == set(policy.state_dict())
    assert {name.split(".")[0] for name in tensors} == {"encoder", "actor"}
    for name, tensor in policy.state_dict().items():
        assert torch.equal(tensors[name], tensor), name
    # The decoded tensors view the received buffer: writing the buffer changes them.
    name = "actor.policy.4.weight"  # random values: its bytes occur once
    before = tensors[name].clone()
    start = good_payload.index(before.numpy().tobytes())
    buffer[start:start + 4] = np.float32(123.0).tobytes()
    assert tensors[name].flatten()[0].item() == 123.0


def test_receiver_loads_whole_state_and_orders_versions():
    a, b = make_policy(seed=1), make_policy(seed=2)
    receiver = WeightsReceiver()
    assert not receiver.ready
    assert receiver.offer(payload_for(a, 1)).status == "loaded"
    assert receiver.loaded_digest == inference_digest(a) == tensor_digest(a.state_dict())
    assert receiver.offer(payload_for(b, 1)).status == "ignored"  # same run, not newer
    assert receiver.loaded_digest == inference_digest(a)
    assert receiver.offer(payload_for(b, 2)).status == "loaded"
    assert receiver.loaded_digest == inference_digest(b)
    # A new learner run is taken even though its version number is lower.
    assert receiver.offer(payload_for(a, 1, run_id="run-b")).status == "loaded"
    assert receiver.meta.run_id == "run-b" and receiver.loaded_digest == inference_digest(a)
    pixels = np.random.default_rng(0).integers(0, 256, (SMALL.image_channels, 24, 24), dtype=np.uint8)
    expected = a.act(pixels, None, deterministic=True, step=0)
    # Equal weights (the digests above), equal actions up to float rounding: the received tensors view the
    # payload, and where the metadata's length puts them on another 16-byte alignment the CPU kernels take
    # another vector path, which can change the last bit (the same tolerance as the actor-vs-infer tests).
    np.testing.assert_allclose(receiver.policy.act(pixels, None, deterministic=True, step=0), expected, rtol=0, atol=1e-6)


def rejection_cases(policy: InferencePolicy) -> dict[str, tuple[bytes, str]]:
    state = policy.state_dict()
    good = payload_for(policy, 5)
    flipped = bytearray(good)
    flipped[-3] ^= 0x01
    extra = dict(state) | {"critic.q1.0.weight": torch.zeros(3)}
    missing = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    wrong_dtype = dict(state) | {"encoder.convnet.0.bias": state["encoder.convnet.0.bias"].double()}
    wrong_shape = dict(state) | {"encoder.convnet.0.bias": torch.zeros(5)}
    other_config = PolicyConfig(**(SMALL.to_dict() | {"frame_stack": 3}))
    torch_save = io.BytesIO()
    torch.save(state, torch_save)
    return {
        "bit flip": (bytes(flipped), "digest"),
        "truncated": (good[:-100], "truncated"),
        "empty": (b"", "shorter"),
        "pickle": (pickle.dumps(state), "pickle"),
        "torch.save": (torch_save.getvalue(), "pickle"),
        "unexpected tensor": (payload_for(policy, 6, state=extra), "unexpected"),
        "head only": (payload_for(policy, 7, state=missing), "missing"),
        "wrong dtype": (payload_for(policy, 8, state=wrong_dtype), "dtype"),
        "wrong shape": (payload_for(policy, 9, state=wrong_shape), "shape"),
        "other config": (encode_weights(make_policy(other_config).state_dict(), config=other_config,
                                        weights_version=10, learner_step=0, run_id="run-a")[0], "fingerprint"),
    }


def test_every_bad_payload_is_rejected_and_the_old_weights_stay():
    policy = make_policy(seed=3)
    receiver = WeightsReceiver()
    assert receiver.offer(payload_for(policy, 1)).status == "loaded"
    loaded, digest = receiver.policy, receiver.loaded_digest
    for name, (payload, phrase) in rejection_cases(make_policy(seed=4)).items():
        offer = receiver.offer(payload)
        assert offer.status == "rejected", name
        assert phrase in offer.reason, (name, offer.reason)
        assert receiver.policy is loaded and receiver.loaded_digest == digest == inference_digest(loaded), name


def test_expected_config_gates_the_first_payload():
    sac = PolicyConfig(**(SMALL.to_dict() | {"policy": "sac"}))
    receiver = WeightsReceiver(expected_config=sac)
    offer = receiver.offer(payload_for(make_policy()))
    assert offer.status == "rejected" and "policy 'drqv2'" in offer.reason and not receiver.ready
    assert receiver.offer(payload_for(make_policy(sac))).status == "loaded"


def test_metadata_lies_are_caught(good_payload):
    meta, tensors = decode_weights(good_payload)
    forged = encode_weights(tensors, config=SMALL, weights_version=2, learner_step=0, run_id="x")[0]
    # Replace the config fingerprint in the header with another one of the same length.
    fake = forged.replace(SMALL.fingerprint().encode(), b"0" * 16)
    with pytest.raises(WeightsError, match="fingerprint"):
        decode_weights(fake)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_decoder_fuzz_random_bytes(data):
    try:
        read_safetensors(data)
        decode_weights(data)
    except WeightsError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_decoder_fuzz_mutated_payloads(good_payload, data):
    """Flip, cut and splice a valid payload: decoding gives the exact tensors or a WeightsError, nothing else."""
    buf = bytearray(good_payload)
    kind = data.draw(st.sampled_from(["flip", "truncate", "header", "splice"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    elif kind == "header":  # mutate inside the JSON header, where structure lives
        header_len = int.from_bytes(buf[:8], "little")
        i = data.draw(st.integers(8, 8 + header_len - 1))
        buf[i] = data.draw(st.integers(0, 255))
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    try:
        meta, tensors = decode_weights(bytes(buf))
    except WeightsError:
        return
    # Accepted: then it must be exactly the original (e.g. a flip inside header padding was harmless).
    original = make_policy().state_dict()
    assert set(tensors) == set(original)
    assert all(torch.equal(tensors[k], original[k]) for k in original)


def test_writer_lays_out_bytes_exactly_as_the_safetensors_library():
    """The weights message is written by our one-copy writer; the library must read it, and lay out the very
    same bytes (alignment by element size, padded header), whatever the dtypes."""
    from safetensors.torch import load as library_load
    from safetensors.torch import save as library_save

    from hilserl.safetensors_io import write_safetensors

    tensors = {"b.u8": torch.arange(5, dtype=torch.uint8), "a.f32": torch.randn(3, 4), "c.i64": torch.tensor([1, -2]),
               "empty": torch.zeros(0), "h.f16": torch.randn(3).half(), "z.bool": torch.tensor([True, False])}
    written = write_safetensors(tensors, {"key": "value"})
    assert written == library_save(tensors, metadata={"key": "value"})
    loaded = library_load(written)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())
    with pytest.raises(ValueError, match="contiguous CPU"):
        write_safetensors({"t": torch.randn(4, 4).t()}, {})


def test_digest_changes_with_any_bit_name_dtype_or_shape():
    base = {"w": torch.zeros(6), "b": torch.ones(2)}
    digest = tensor_digest(base)
    assert tensor_digest({"b": torch.ones(2), "w": torch.zeros(6)}) == digest  # name order, not insertion order
    flipped = torch.zeros(6)
    flipped.view(torch.int32)[3] ^= 1  # one bit of one float
    variants = [{"w": flipped, "b": torch.ones(2)}, {"v": torch.zeros(6), "b": torch.ones(2)},
                {"w": torch.zeros(6, dtype=torch.int32), "b": torch.ones(2)},  # the same bytes, another dtype
                {"w": torch.zeros(2, 3), "b": torch.ones(2)}, {"w": torch.zeros(6)}]
    assert len({tensor_digest(v) for v in variants} | {digest}) == len(variants) + 1
    assert len(digest) == 32 and int(digest, 16) >= 0  # 128 bits, hex


def test_a_prepared_empty_policy_is_filled_once_and_only_for_its_config():
    a, b = make_policy(seed=1), make_policy(seed=2)
    receiver = WeightsReceiver()
    assert receiver.offer(payload_for(a, 1)).status == "loaded"
    receiver.prepare_next()
    prepared = receiver._empty[1]
    assert receiver.offer(payload_for(b, 2)).status == "loaded"
    assert receiver.policy is prepared and receiver.loaded_digest == inference_digest(b)
    # Used: the next load builds (or is handed) another, never refills the policy in use.
    assert receiver._empty is None
    assert receiver.offer(payload_for(a, 3)).status == "loaded"
    assert receiver.policy is not prepared and inference_digest(prepared) == inference_digest(b)
    # A prepared policy of another config is not used for a payload of this one.
    other = PolicyConfig(image_size=24, hidden_dim=8, feature_dim=8, encoder_channels=4, frame_stack=2)
    receiver._empty = (other.fingerprint(), empty_policy(other))
    assert receiver.offer(payload_for(a, 4)).status == "loaded" and receiver.loaded_digest == inference_digest(a)
