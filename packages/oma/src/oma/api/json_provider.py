"""The API's JSON encoder: orjson for responses, Flask's rules for everything else.

A page of a list is tens of kilobytes of JSON; the standard library's encoder is the largest
single cost of such a request, orjson encodes the same document several times faster. The
output is the same JSON (UTF-8 instead of ``\\u`` escapes, no spaces); values orjson does not
take the way Flask does (a datetime, which Flask writes as an HTTP date, a ``Decimal``, an
object with ``__html__``) go through Flask's own ``default``, and a document orjson refuses
altogether (an integer beyond 64 bits, a lone surrogate) is written by the standard encoder.
JSON the database wrote (:class:`~oma.database.repos._documents.JsonText`, a page of a list)
is embedded as it is.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

from ..database.repos._documents import JsonText

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with :mod:`orjson` doing the encoding."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        """Flask's rules, and :class:`JsonText` as its value (for the standard encoder)."""
        if isinstance(o, JsonText):
            return orjson.loads(o.text)
        return DefaultJSONProvider.default(o)

    def _orjson_default(self, o: Any) -> Any:
        if isinstance(o, JsonText):
            return orjson.Fragment(o.text)
        return self.default(o)

    def _encode(self, obj: Any, *, indent: bool) -> bytes | None:
        """``obj`` as UTF-8 JSON, or None when orjson cannot take it."""
        try:
            return orjson.dumps(
                obj,
                default=self._orjson_default,
                option=_OPTIONS | (orjson.OPT_INDENT_2 if indent else 0),
            )
        except orjson.JSONEncodeError:
            return None

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``obj`` as JSON text (Flask's :meth:`DefaultJSONProvider.dumps` when given
        arguments of :func:`json.dumps`, or when orjson cannot take it)."""
        if not kwargs:
            encoded = self._encode(obj, indent=False)
            if encoded is not None:
                return encoded.decode()
        return super().dumps(obj, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """A JSON response of the arguments, as :func:`flask.jsonify` makes it."""
        obj = self._prepare_response_obj(args, kwargs)
        indent = (self.compact is None and self._app.debug) or self.compact is False
        encoded = self._encode(obj, indent=indent)
        if encoded is None:
            return super().response(*args, **kwargs)
        return self._app.response_class(encoded + b"\n", mimetype=self.mimetype)
