"""One package per avatar API behind one interface (base.py): heygen/ and liveavatar/."""
