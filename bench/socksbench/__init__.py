"""
The pieces of ``bench/run.py``: loopback targets (``targets``), the proxies
under test and how they are installed and started (``peers``), the measures
(``measures``) and the report (``report``); ``util`` holds what they share.
"""
