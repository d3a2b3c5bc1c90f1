"""Wan 2.2 A14B pairs: which expert a file is for, from its training timesteps and its name, and
its partner among the listed files."""
import pytest

from loralab.formats.noise_pair import noise_role, partner, role_from_metadata, role_from_name


@pytest.mark.parametrize("meta, role", [
    ({"ss_min_timestep": "875", "ss_max_timestep": "1000"}, "high"),  # musubi-tuner T2V high-noise run
    ({"ss_min_timestep": "900"}, "high"),
    ({"ss_min_timestep": "0", "ss_max_timestep": "875"}, None),  # straddles the midpoint: not decidable
    ({"ss_max_timestep": "400"}, "low"),
    ({"ss_min_timestep": "0", "ss_max_timestep": "1000"}, None),
    ({"ss_min_timestep": "None", "ss_max_timestep": ""}, None),
    ({"ss_min_timestep": "abc"}, None),
    ({}, None),
])
def test_role_from_training_timesteps(meta, role):
    found = role_from_metadata(meta)
    assert (found.role if found else None) == role


@pytest.mark.parametrize("name, role", [
    ("wan22/mychar_high_noise.safetensors", "high"),
    ("wan22/mychar_low_noise_e10.safetensors", "low"),
    ("Wan2.2-T2V-A14B-HIGH-style.safetensors", "high"),
    ("style.LN.safetensors", "low"),
    ("mychar_HN_v2.safetensors", "high"),
    ("highlights_style.safetensors", None),  # a token only between separators
    ("flowers.safetensors", None),  # "low" inside a word is no token
    ("high_low_mix.safetensors", None),  # both: undecidable
])
def test_role_from_name(name, role):
    found = role_from_name(name)
    assert (found.role if found else None) == role


def test_metadata_outranks_the_name_and_says_why():
    role = noise_role("x_low_noise.safetensors", {"ss_min_timestep": "875", "ss_max_timestep": "1000"})
    assert role.role == "high" and "875" in role.evidence
    role = noise_role("x_low_noise.safetensors", {})
    assert role.role == "low" and "x_low_noise.safetensors" in role.evidence


def test_partner_swaps_the_token_in_the_same_folder_any_case():
    names = ["a/char_high_noise.safetensors", "a/char_low_noise.safetensors", "b/char_low_noise.safetensors",
             "Style_HIGH.safetensors", "style_low.safetensors", "m_HN.safetensors", "m_LN.safetensors",
             "solo_high_noise.safetensors"]
    assert partner("a/char_high_noise.safetensors", names) == "a/char_low_noise.safetensors"
    assert partner("a/char_low_noise.safetensors", names) == "a/char_high_noise.safetensors"
    assert partner("Style_HIGH.safetensors", names) == "style_low.safetensors"
    assert partner("m_HN.safetensors", names) == "m_LN.safetensors"
    assert partner("solo_high_noise.safetensors", names) is None
    assert partner("plain.safetensors", names + ["plain.safetensors"]) is None
