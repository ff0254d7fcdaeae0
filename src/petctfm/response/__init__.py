"""Treatment response from a baseline and a follow-up ``petctfm predict`` output (``petctfm response``;
docs/response.md): follow-up -> baseline registration (SimpleITK, rigid then affine, Mattes mutual information),
lesion matching (matched, new, disappeared, split, merged), PERCIST 1.0, the Deauville 5-point score, TMTV and
TLG change, and the report (``response.json``, ``lesions.csv``, ``response.png``).

- :mod:`~petctfm.response.inputs`: a prediction folder -> :class:`~petctfm.response.inputs.TimePoint`;
- :mod:`~petctfm.response.register`: the registration;
- :mod:`~petctfm.response.match`: the lesion correspondence;
- PERCIST 1.0 and Deauville themselves (pure functions of numbers) are :mod:`petctfm.evaluate.percist`;
- :mod:`~petctfm.response.report`: the picture;
- :mod:`~petctfm.response.api`: :func:`~petctfm.response.api.assess_response`, the whole command.
"""
