"""FBank: frame rule, no look-ahead, decoding of odd formats, mel placement."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from pipeline.common.errors import MediaError
from pipeline.features.fbank import compute_fbank, kaldi_mel_banks
from pipeline.media.audio import decode_audio, ffmpeg_exe
from schemas.conventions import FBANK_FRAMES_PER_HEAD, HEAD_HOP_SAMPLES, SAMPLE_RATE


def tone(freq: float, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_exactly_eight_frames_per_head_frame_truncated_to_whole_head_frames():
    for n in (HEAD_HOP_SAMPLES * 10, HEAD_HOP_SAMPLES * 10 + 1279, 999):
        fb = compute_fbank(np.zeros(n, np.float32) + 1e-3)
        assert fb.shape == ((n // HEAD_HOP_SAMPLES) * FBANK_FRAMES_PER_HEAD, 80)


def test_no_look_ahead_beyond_the_head_frame():
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 0.1, SAMPLE_RATE * 3).astype(np.float32)
    k = 17  # perturb everything from the start of head frame k on
    changed = wave.copy()
    changed[k * HEAD_HOP_SAMPLES:] = rng.normal(0, 0.1, len(wave) - k * HEAD_HOP_SAMPLES)
    a, b = compute_fbank(wave), compute_fbank(changed)
    np.testing.assert_array_equal(a[: k * FBANK_FRAMES_PER_HEAD], b[: k * FBANK_FRAMES_PER_HEAD])
    assert not np.allclose(a[k * FBANK_FRAMES_PER_HEAD], b[k * FBANK_FRAMES_PER_HEAD])


def test_tone_peaks_in_the_mel_bin_holding_its_frequency():
    banks = kaldi_mel_banks()
    freqs = np.arange(banks.shape[1]) * SAMPLE_RATE / 512
    for f in (300.0, 1000.0, 4000.0):
        fb = compute_fbank(tone(f, 1.0))
        peak = int(np.argmax(fb[10:-10].mean(0)))
        assert banks[peak, np.argmin(np.abs(freqs - f))] > 0.5


def test_deterministic():
    wave = tone(440, 2.0)
    np.testing.assert_array_equal(compute_fbank(wave), compute_fbank(wave))


def test_decodes_stereo_48k_and_offsets(tmp_path):
    stereo = np.stack([tone(440, 1.0, 48000), tone(440, 1.0, 48000)], axis=1)
    path = tmp_path / "a.wav"
    sf.write(path, stereo, 48000)
    wave = decode_audio(path)
    assert abs(len(wave) - SAMPLE_RATE) <= 2
    later = decode_audio(path, offset_s=0.5)
    assert abs(len(later) - len(wave) - 8000) <= 1 and np.all(later[:8000] == 0)
    earlier = decode_audio(path, offset_s=-0.25)
    assert abs(len(wave) - len(earlier) - 4000) <= 1


def test_decodes_m4a(tmp_path):
    src = tmp_path / "a.wav"
    sf.write(src, tone(300, 2.0, 44100), 44100)
    dst = tmp_path / "a.m4a"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-c:a", "aac", str(dst)], check=True)
    wave = decode_audio(dst)
    assert abs(len(wave) / SAMPLE_RATE - 2.0) < 0.1


def test_corrupt_and_missing_audio_name_the_file(tmp_path):
    bad = tmp_path / "broken.m4a"
    bad.write_bytes(b"not really audio" * 100)
    with pytest.raises(MediaError, match="broken.m4a"):
        decode_audio(bad)
    with pytest.raises(MediaError, match="missing.wav"):
        decode_audio(tmp_path / "missing.wav")


def test_real_odd_format_speech(testdata):
    # 48 kHz stereo 32-bit WAVE_FORMAT_EXTENSIBLE Japanese speech
    wave = decode_audio(testdata / "sadtalker" / "japanese.wav")
    fb = compute_fbank(wave)
    assert fb.shape[1] == 80 and len(fb) == (len(wave) // HEAD_HOP_SAMPLES) * 8
    assert np.isfinite(fb).all() and fb.std() > 1.0


def test_decoding_is_exact_for_16k_mono_pcm(tmp_path):
    # int16 -> float32 is a division by 32768, exact in float32: no resampling, no dither, no gain
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32767, SAMPLE_RATE, dtype=np.int16)
    path = tmp_path / "pcm.wav"
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
    np.testing.assert_array_equal(decode_audio(path), pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize("name", ["take:1.wav", "-v.wav", "pipe:0"])
def test_odd_local_names_are_read_as_files(tmp_path, monkeypatch, name):
    """A relative name with ':' is not a protocol for ffmpeg, one starting with '-' is not an option."""
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "plain.wav", tone(440, 0.5), SAMPLE_RATE)
    (tmp_path / name).write_bytes((tmp_path / "plain.wav").read_bytes())
    np.testing.assert_array_equal(decode_audio(name), decode_audio(tmp_path / "plain.wav"))


def test_playlists_cannot_reach_beyond_local_files(tmp_path):
    playlist = tmp_path / "remote.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/seg.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(MediaError, match="remote.m3u8"):
        decode_audio(playlist)


@pytest.mark.parametrize(("value", "match"), [(1e25, r"beyond \+-64 .*at 0\.500 s"), (np.inf, r"NaN/inf sample.*0\.500 s")])
def test_poisoned_float_audio_is_refused_with_its_time(tmp_path, value, match):
    """A float WAV with a huge (but finite) or infinite sample must not reach the FBank (it would be NaN)."""
    wave = np.zeros(SAMPLE_RATE, np.float32)
    wave[SAMPLE_RATE // 2] = value
    path = tmp_path / "loud.wav"
    sf.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(MediaError, match=match) as err:
        decode_audio(path)
    assert err.value.path == str(path)
