"""``petctfm serve``: the local web viewer where clicks segment and correct lesions (docs/viewer.md)."""

from __future__ import annotations

import argparse

from petctfm.cli._api import api_default
from petctfm.cli._common import add_command

SERVE = "petctfm.serve.app:serve"

EXAMPLES = """
# every case of a folder (autoPET, nnU-Net, DICOM tree, paired files or a harmonized dataset)
petctfm serve --model runs/prompt --data data/synth/autopet

# one study, with the automatic segmentation model behind "Run automatic"
petctfm serve --model runs/prompt --auto-model runs/ft_joint --pet case/SUV.nii.gz --ct case/CT.nii.gz

# the studies of a DICOMweb service (Orthanc here; credentials from $PETCTFM_DICOMWEB_USER/_PASSWORD, _TOKEN or
# --dicomweb-auth FILE): Save stores the SEG back into the study, the reader named as its content creator
petctfm serve --model runs/prompt --auto-model runs/ft_joint --dicomweb http://127.0.0.1:8042/dicom-web

# reachable from the network as https://reader-ws.example.org:8765 (TLS; the Host check stays on)
petctfm serve --model runs/prompt --data cases/ --host 0.0.0.0 --allow-host reader-ws.example.org --certfile cert.pem --keyfile key.pem
"""

#: The packages of the [serve] extra, checked before anything else (one line, not a traceback).
EXTRA = ("fastapi", "uvicorn", "pydantic")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "serve", help="local web viewer: fused PET/CT, clicks segment and correct lesions, save",
                    description="Serve a PET/CT viewer on 127.0.0.1 (niivue in the browser): a case list, fused "
                    "PET/CT in three planes and a PET MIP, 'Run automatic' (a petctfm predict model), click = add, "
                    "shift-click = remove, box, undo/redo, lesion table (volume, SUVmax/mean/peak, TLG), save as "
                    "NIfTI on the input PET grid (+ DICOM-SEG for DICOM input), autosave and an audit log. The URL "
                    "printed carries a random token every request needs. Needs: pip install 'petctfm[serve]'. "
                    "See docs/viewer.md.", examples=EXAMPLES)
    p.add_argument("--model", required=True, metavar="RUN", help="prompt-train run folder or model.safetensors")
    p.add_argument("--auto-model", metavar="RUN", help="fine-tuned segmentation run for 'Run automatic' (optional)")
    src = p.add_argument_group("cases (either --data, or --pet and --ct, or --dicomweb)")
    src.add_argument("--data", metavar="FOLDER", help="a folder of cases in any layout petctfm reads")
    src.add_argument("--pet", help="PET image in SUV or a DICOM PT series folder")
    src.add_argument("--ct", help="CT image in HU or a DICOM CT series folder")
    src.add_argument("--dicomweb", metavar="URL", help="a DICOMweb service: its studies with a PT series are listed; "
                     "Save stores the SEG back by STOW-RS with the reader as content creator (docs/pacs.md; pip "
                     "install 'petctfm[pacs]')")
    src.add_argument("--dicomweb-auth", metavar="FILE", help="JSON credentials file for --dicomweb (docs/pacs.md)")
    src.add_argument("--dicomweb-ca", metavar="PEM", help="CA bundle for --dicomweb over https")
    p.add_argument("--out", default="petctfm-serve", help="output folder: <out>/<case>/mask.nii.gz, lesions.csv, "
                   "audit.jsonl (default ./petctfm-serve)")
    p.add_argument("--port", type=int, action=api_default(SERVE, "port"), help="TCP port, 1-65535 (default "
                   "{default}; when the default is busy the next free port is taken and printed; a --port given "
                   "and busy is an error)")
    p.add_argument("--host", action=api_default(SERVE, "host"), help="bind address (default {default}; anything "
                   "else is reachable from the network: a warning is printed)")
    p.add_argument("--allow-host", action="append", metavar="NAME", help="a name or address of this machine "
                   "that the Host header may carry (repeatable; with --host 0.0.0.0 the first is the URL printed)")
    p.add_argument("--certfile", metavar="PEM", help="TLS certificate (with --keyfile): serve https")
    p.add_argument("--keyfile", metavar="PEM", help="TLS private key (with --certfile)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from petctfm.cli._api import given
    from petctfm.core.errors import UsageError

    missing = missing_extra()
    if missing:
        raise UsageError(f"petctfm serve needs {', '.join(missing)} (not installed): pip install 'petctfm[serve]'")
    from petctfm.serve.app import check_port, make_server, serve
    from petctfm.serve.launch import check_tls

    sources = [args.data is not None, args.pet is not None, args.dicomweb is not None]
    if sum(sources) != 1 or (args.pet is None) != (args.ct is None):
        raise UsageError("give --data FOLDER, or --pet and --ct, or --dicomweb URL")
    if (args.dicomweb_auth or args.dicomweb_ca) and not args.dicomweb:
        raise UsageError("--dicomweb-auth and --dicomweb-ca go with --dicomweb URL")
    web = None
    if args.dicomweb:
        import importlib.util

        if importlib.util.find_spec("dicomweb_client") is None:
            raise UsageError("--dicomweb needs dicomweb-client (not installed): pip install 'petctfm[pacs]'")
        from petctfm.io.dicomweb import check_url, connect

        check_url(args.dicomweb)
    options = given(args, {"host": "host", "port": "port", "certfile": "certfile", "keyfile": "keyfile"})
    if args.allow_host:
        options["allow_host"] = tuple(args.allow_host)
    options["free_port"] = "port" not in options  # a --port given and busy is an error, the default moves on
    if "port" in options:
        check_port(options["port"])  # before the model and the cases are read
    check_tls(options.get("certfile"), options.get("keyfile"))
    if args.dicomweb:
        web = connect(args.dicomweb, auth_file=args.dicomweb_auth, ca_bundle=args.dicomweb_ca)
    server = make_server(args.model, data=args.data, pet=args.pet, ct=args.ct, out=args.out,
                         auto_model=args.auto_model, device=args.device, dicomweb=web)
    serve(server, **options)
    return 0


def missing_extra() -> list[str]:
    """The packages of :data:`EXTRA` that cannot be imported (found without importing them)."""
    import importlib.util

    out = []
    for name in EXTRA:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except (ImportError, ValueError):
            out.append(name)
    return out
