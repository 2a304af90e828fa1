"""`latentsynth devices`: list audio output devices (PortAudio), the JACK server's playback
ports, and MIDI input ports, with the names `serve --audio/--midi` accepts."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def list_devices() -> dict:
    """{"audio": [{index, name, channels, default_samplerate}], "jack": [port names] or None
    (no server), "midi": [input port names], "errors": [...]}."""
    result = {"audio": [], "jack": None, "midi": [], "errors": []}
    try:
        import sounddevice  # optional: each backend is probed only if installed

        for index, info in enumerate(sounddevice.query_devices()):
            if info["max_output_channels"] > 0:
                result["audio"].append({"index": index, "name": info["name"],
                                        "channels": info["max_output_channels"],
                                        "default_samplerate": info["default_samplerate"]})
    except Exception as error:  # PortAudio missing or failing: report, keep listing the rest
        result["errors"].append(f"PortAudio: {error}")
    try:
        import jack  # optional: each backend is probed only if installed

        client = jack.Client("latentsynth-devices", no_start_server=True)
        result["jack"] = [port.name for port in client.get_ports(is_audio=True, is_input=True)]
        client.close()
    except Exception as error:  # no server is the common case
        result["errors"].append(f"JACK: {error}")
    try:
        import mido  # optional: each backend is probed only if installed

        result["midi"] = list(mido.get_input_names())
    except Exception as error:  # no ALSA sequencer in containers
        result["errors"].append(f"MIDI: {error}")
    return result


def main(args: argparse.Namespace) -> int:
    devices = list_devices()
    if args.json:
        print(json.dumps(devices))
        return 0
    print("Audio outputs (--audio NAME or INDEX):")
    for device in devices["audio"] or []:
        print(f"  [{device['index']}] {device['name']} ({device['channels']} ch, "
              f"{device['default_samplerate']:.0f} Hz)")
    if not devices["audio"]:
        print("  none")
    print("JACK server (--audio jack): " + ("not running" if devices["jack"] is None else
                                            "running, playback ports: " + (", ".join(devices["jack"]) or "none")))
    print("MIDI inputs (--midi NAME):")
    for name in devices["midi"]:
        print(f"  {name}")
    if not devices["midi"]:
        print("  none")
    for error in devices["errors"]:
        print(f"  note: {error}")
    return 0
