import sys
from pathlib import Path

# The tests run in importlib mode (no package); grounding_cases.py is shared by name.
sys.path.insert(0, str(Path(__file__).parent))
