"""cloq eval reproduces the independent float64 reference (reference_outputs.json): story
perplexity within 1e-4 relative and the logits of the first 3 positions within 1e-4, at 1 (plain
process), 2 and 3 ranks; the three runs print the same perplexity to the last digit."""
import os

import numpy as np

from cloqtest import MODEL, check, done, ppl_of, reference, run, tmpdir, write_tokens

PPL_RTOL = 1e-4
LOGIT_ATOL = 1e-4

ref = reference()
d = tmpdir()
tok = os.path.join(d, "story.tokens")
write_tokens(tok, [ref["story_ids"]])
want_logits = np.array(ref["story_logits_first3_positions"])
ppls = []
for np_ in (0, 2, 3):
    lg = os.path.join(d, f"logits{np_}.txt")
    p = run(["eval", "--model", MODEL, "--data", tok, "--data-format", "tokens", "--dump-logits", lg], np_)
    ppl = ppl_of(p)
    ppls.append(ppl)
    rel = abs(ppl - ref["story_ppl"]) / ref["story_ppl"]
    check(rel < PPL_RTOL, f"np={np_}: story ppl {ppl:.6f} vs reference {ref['story_ppl']:.6f} (rel {rel:.2e})",
          f"< {PPL_RTOL}", rel)
    got = np.loadtxt(lg)
    err = np.abs(got - want_logits).max()
    check(got.shape == want_logits.shape and err < LOGIT_ATOL, f"np={np_}: first-3 logits max error {err:.2e}",
          f"< {LOGIT_ATOL}", err)
check(len(set(ppls)) == 1, "perplexity identical at 1, 2, 3 ranks", ppls[0], ppls)
done()
