"""functions-framework targets of barrage (Knative and local), served in ASGI mode::

    functions-framework --asgi --source functions/main.py --target homepage --port 8080
    functions-framework --asgi --source functions/main.py --target processor --port 8081

Services are built from the process environment on first use, once per process; each target
loads only its own side (a processor pod never imports the HomePage, nor the reverse).
"""

from __future__ import annotations

from functions.barrage_app import app
from functions.barrage_app import homepage as _homepage
from functions.barrage_app import processor as _processor

FUNCTIONS_SOURCE_FILE = __file__

# Each target is named as its function: ``processor`` (the function; handlers.process.process is the
# pure step it runs, functions.processor.process_records the event handler around it).
homepage = _homepage.target
processor = _processor.target

__all__ = ["FUNCTIONS_SOURCE_FILE", "app", "homepage", "processor"]
