"""Speech data: corpora in the LibriSpeech layout, features, tokens and batches.

Import the submodules directly (kept import-free here so that, e.g., the generator does not
pull in torch-heavy modules it does not need):

* `fambench.data.synth` — the embedded eSpeak NG corpus (`SynthSettings`, `ensure_corpus`)
* `fambench.data.librispeech` — manifests, validation (`load_manifest`, `check_root`)
* `fambench.data.features` — log-mel, cache, CMVN, SpecAugment (`FeatureCache`, ...)
* `fambench.data.tokenizer` — `CharTokenizer`, `SentencePieceTokenizer`, `load_tokenizer`
* `fambench.data.batching` — `LengthBucketBatcher`, `collate`, `drop_infeasible`
"""
