"""dim_zipcode: one spelling for Virginia's independent cities.

The vendor writes some as "Fredericksburg city" and others as "Baltimore City"; reports
group by county name, so the suffix is made one: "City".
"""

from __future__ import annotations

import pandas as pd


def normalise_county(rows: pd.DataFrame) -> pd.DataFrame:
    rows["county"] = rows["county"].str.replace(r" city$", " City", regex=True)
    return rows
