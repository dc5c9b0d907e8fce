"""List policies applied to a model's ranking, shared by serving (which applies them to answers)
and evaluation (which measures what they cost): sponsored slots, MMR diversity re-ranking and
new-user onboarding popularity. Pure functions of scores, item indices or ids: no I/O, no
server; `shoprec.serving` and `shoprec.evaluation` both import them, never the reverse."""
