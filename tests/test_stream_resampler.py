"""The streaming polyphase resampler: streaming equals offline, kernel equals reference, accuracy."""
import numpy as np
import pytest

from rt_engine.gru.stream_resampler import (StreamResampler, resample_offline, resample_stream,
                                        resample_stream_reference)

RATES = [(16000, 48000), (16000, 44100), (48000, 16000)]


def _stream(resampler, x, chunk_sizes):
    parts, start, index = [], 0, 0
    while start < x.shape[0]:
        size = chunk_sizes[index % len(chunk_sizes)]
        out = np.zeros(resampler.max_frames_for(size), np.float32)
        n_written = resampler.process(x[start:start + size], out)
        parts.append(out[:n_written])
        start, index = start + size, index + 1
    return np.concatenate(parts)


@pytest.mark.parametrize("rates", RATES)
def test_streaming_in_any_chunking_equals_offline(rates):
    x = np.random.default_rng(0).standard_normal(3001).astype(np.float32)
    expected = resample_offline(x, *rates)
    for chunks in ([1], [64], [7, 130, 1, 333], [3001]):
        actual = _stream(StreamResampler(*rates, max_chunk=3001), x, chunks)
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("rates", RATES)
def test_kernel_equals_numpy_reference(rates):
    x = np.random.default_rng(1).standard_normal(500).astype(np.float32)
    kernel, reference = StreamResampler(*rates, max_chunk=200), StreamResampler(*rates, max_chunk=200)
    for start in range(0, 500, 200):
        chunk = x[start:start + 200]
        out_kernel = np.zeros(kernel.max_frames_for(200), np.float32)
        out_reference = np.zeros_like(out_kernel)
        n_kernel = resample_stream(chunk, kernel.table, kernel.up, kernel.down, kernel.history,
                                   kernel.counters, out_kernel)
        n_reference = resample_stream_reference(chunk, reference.table, reference.up, reference.down,
                                                 reference.history, reference.counters, out_reference)
        assert n_kernel == n_reference
        np.testing.assert_allclose(out_kernel[:n_kernel], out_reference[:n_reference], rtol=0, atol=2e-6)
        np.testing.assert_array_equal(kernel.counters, reference.counters)


@pytest.mark.parametrize("rates", RATES[:2])
def test_a_sine_comes_out_as_the_same_sine_delayed_by_the_declared_latency(rates):
    rate_in, rate_out = rates
    frequency_hz = 1234.5
    x = np.sin(2 * np.pi * frequency_hz * np.arange(4000) / rate_in).astype(np.float32)
    resampler = StreamResampler(rate_in, rate_out, max_chunk=4000)
    y = _stream(resampler, x, [4000])
    t_s = (np.arange(y.shape[0]) * resampler.down / resampler.up - resampler.delay_input_samples) / rate_in
    expected = np.sin(2 * np.pi * frequency_hz * t_s)
    steady = slice(y.shape[0] // 4, y.shape[0] - y.shape[0] // 4)
    error_db = 20 * np.log10(np.sqrt(np.mean((y[steady] - expected[steady]) ** 2)) / np.sqrt(0.5))
    assert error_db < -60
    assert resampler.latency_frames == resampler.delay_input_samples * rate_out / rate_in


def test_frame_count_after_n_inputs_is_the_ceiling_of_the_ratio():
    resampler = StreamResampler(16000, 44100, max_chunk=160)
    total = 0
    for n_in in range(1, 20):
        out = np.zeros(resampler.max_frames_for(160), np.float32)
        total += resampler.process(np.zeros(160, np.float32), out)
        assert total == -(-n_in * 160 * 441 // 160)


def test_images_above_the_input_nyquist_are_suppressed():
    x = np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    y = resample_offline(x, 16000, 48000)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.shape[0]))) ** 2
    frequency_hz = np.fft.rfftfreq(y.shape[0], 1 / 48000)
    passband = spectrum[(frequency_hz > 500) & (frequency_hz < 6000)].mean()
    images = spectrum[(frequency_hz > 9000) & (frequency_hz < 23000)].mean()
    assert 10 * np.log10(images / passband) < -60


def test_bad_rates_and_oversized_chunks_are_rejected():
    with pytest.raises(ValueError, match="rates"):
        StreamResampler(0, 48000)
    with pytest.raises(ValueError, match="max_chunk"):
        StreamResampler(16000, 48000, max_chunk=8).process(np.zeros(9, np.float32), np.zeros(64, np.float32))
