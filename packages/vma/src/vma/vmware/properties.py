"""Bulk reads through the PropertyCollector (RetrievePropertiesEx, paged).

Reading properties in bulk is what scales to thousands of VMs, and it never touches unset
properties: they are simply absent from the answer (a property dict lacks the key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector

#: Objects per RetrievePropertiesEx page.
PAGE_SIZE = 500


def _collect(si: vim.ServiceInstance, spec: PC.FilterSpec) -> list[tuple[Any, dict[str, Any]]]:
    pc = si.content.propertyCollector
    result = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=PAGE_SIZE))
    out: list[tuple[Any, dict[str, Any]]] = []
    while result is not None:
        for item in result.objects or []:
            out.append((item.obj, {p.name: p.val for p in item.propSet or []}))
        if not result.token:
            break
        result = pc.ContinueRetrievePropertiesEx(result.token)
    return out


def retrieve_view(
    si: vim.ServiceInstance,
    container: vim.ManagedEntity,
    paths_by_type: Mapping[type, Sequence[str]],
) -> list[tuple[Any, dict[str, Any]]]:
    """Every object of the given types below ``container``, with the given property paths.

    One ContainerView (recursive) and one paged RetrievePropertiesEx; the view is destroyed
    afterwards. Returns ``[(managed_object, {path: value})]``.
    """
    content = si.content
    view = content.viewManager.CreateContainerView(container, list(paths_by_type), True)
    try:
        traversal = PC.TraversalSpec(name="view", type=vim.view.ContainerView, path="view")
        obj_spec = PC.ObjectSpec(obj=view, skip=True, selectSet=[traversal])
        prop_specs = [
            PC.PropertySpec(type=t, pathSet=list(paths), all=False)
            for t, paths in paths_by_type.items()
        ]
        return _collect(si, PC.FilterSpec(objectSet=[obj_spec], propSet=prop_specs))
    finally:
        view.Destroy()


def retrieve_objects(
    si: vim.ServiceInstance, objects: Iterable[Any], paths: Sequence[str]
) -> list[tuple[Any, dict[str, Any]]]:
    """The given property paths of each object (all objects of the same managed type)."""
    objs = list(objects)
    if not objs:
        return []
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=o, skip=False) for o in objs],
        propSet=[PC.PropertySpec(type=type(objs[0]), pathSet=list(paths), all=False)],
    )
    return _collect(si, spec)


def retrieve_one(si: vim.ServiceInstance, obj: Any, paths: Sequence[str]) -> dict[str, Any]:
    """The given property paths of one object (absent keys = unset properties)."""
    found = retrieve_objects(si, [obj], paths)
    return found[0][1] if found else {}
