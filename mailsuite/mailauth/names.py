"""Domain-name syntax shared by SPF, DMARC and Authentication-Results, free of heavy imports.

The SMTP server loads the Authentication-Results filter on every start; keeping
this check apart from the SPF module keeps pyspf and dkimpy out of that path.
"""

from __future__ import annotations

import re

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$", re.IGNORECASE)


def is_domain_name(name: str) -> bool:
    """True for a syntactically valid fully qualified domain name (no literal, at least one dot)."""
    return bool(_DOMAIN.match(name.rstrip(".")))
