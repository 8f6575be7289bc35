// What the operator is looking at: one target and, in its tree, one node. The target is
// remembered across reloads (through `prefs`, a Preferences from storage.js).

export class Selection {
  constructor(prefs) {
    this.prefs = prefs;
    this.targetId = prefs.get('selected_target');
    this.path = null;
  }

  // Selecting another target forgets the selected node.
  selectTarget(targetId) {
    if (this.targetId === targetId) return;
    this.targetId = targetId;
    this.path = null;
    this.prefs.set('selected_target', targetId);
  }

  selectNode(path) {
    this.path = path;
  }
}

// The target to show: the selected one while the store knows it, else the first listed.
export function defaultTarget(store, current) {
  if (current && store.targets.has(current)) return current;
  const listed = store.listedTargets();
  return listed.length ? listed[0].targetId : current;
}
