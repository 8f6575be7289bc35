import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { ControlPanel } from '../../supervisor/relay/web/static/panels/control.js';
import { Selection } from '../../supervisor/relay/web/static/selection.js';
import { COMMANDS } from '../../supervisor/relay/web/static/vocabulary.js';
import { choose, loadPage } from './dom-shim.mjs';
import { TARGET, contractStore, fixture, memoryPrefs } from './helpers.mjs';

setLanguage('en');

// A relay session that records what it is asked to send.
function fakeSession({ established = true, accepts = true } = {}) {
  return { established, sent: [], send(msg) { this.sent.push(msg); return accepts; } };
}

function setup({ session = fakeSession(), selected = TARGET, commands = null, permitted = null } = {}) {
  const doc = loadPage();
  const store = contractStore();
  if (permitted) store.session.permittedCommands = permitted; // as a server_hello granting them
  if (commands) {
    store.apply({
      type: 'target_list',
      targets: [{ target_id: TARGET, display_name: 'payments worker a', connection_state: 'connected', supported_commands: commands.map((name) => ({ name })) }],
    });
  }
  const selection = new Selection(memoryPrefs(selected ? { selected_target: selected } : {}));
  const toasts = [];
  let n = 0;
  const panel = new ControlPanel(doc, {
    store, selection, session: () => session, notify: (text, level) => toasts.push({ text, level }),
    newId: () => { n += 1; return `00000000-0000-4000-8000-00000000000${n}`; },
  });
  panel.renderOptions();
  const $ = (id) => doc.getElementById(id);
  const fill = (command, path, reason) => {
    choose($('cmd-command'), command);
    if (path !== null) panel.setPath(path);
    $('cmd-reason').value = reason;
  };
  return { doc, store, selection, panel, session, toasts, $, fill };
}

test('only commands the session is granted (server_hello) are offered', () => {
  const { $, store, panel } = setup({ commands: ['shutdown_tree', 'pause_child', 'resume_child', 'restart_child'] });
  assert.equal($('cmd-command').options.length, 4, 'the fixture principal is granted every command');
  store.apply({ ...fixture('session.server_hello'), permitted_commands: ['resume_child', 'pause_child', 'add_child'] });
  panel.renderOptions();
  assert.deepEqual($('cmd-command').options.map((o) => o.value), ['pause_child', 'resume_child'], 'supported and granted, in contract order');
  store.apply({ ...fixture('session.server_hello'), permitted_commands: [] });
  panel.renderOptions();
  assert.deepEqual($('cmd-command').options.map((o) => o.value), []);
  assert.equal($('cmd-command').disabled, true);
  assert.equal($('cmd-hint').textContent, 'You are not granted any command this target accepts.');
  const { permitted_commands: _, ...older } = fixture('session.server_hello');
  store.apply(older); // a relay that does not announce grants: offer what the target supports
  panel.renderOptions();
  assert.equal($('cmd-command').options.length, 4);
});

test('only the selected target\'s supported commands are offered, dangerous ones marked', () => {
  const { $ } = setup({ commands: ['shutdown_tree', 'pause_child', 'resume_child'] });
  const options = $('cmd-command').options;
  assert.deepEqual(options.map((o) => o.value), ['pause_child', 'resume_child', 'shutdown_tree'], 'in contract order');
  assert.deepEqual(options.map((o) => o.textContent), ['Pause child', 'Resume child', 'Shut down tree ⚠']);
  assert.equal($('cmd-command').disabled, false);
  assert.equal($('cmd-hint').textContent, '');
  choose($('cmd-command'), 'shutdown_tree');
  assert.equal($('cmd-path').disabled, true, 'shutdown_tree has no child path');
  assert.equal($('cmd-hint').textContent, 'Needs confirmation.');
});

test('the form says why nothing can be sent without a target or commands', () => {
  const none = setup({ selected: null });
  assert.equal(none.$('cmd-command').options.length, 0);
  assert.equal(none.$('cmd-command').disabled, true);
  assert.equal(none.$('cmd-hint').textContent, 'Select a connected target first.');
  const mute = setup({ commands: [] });
  assert.equal(mute.$('cmd-hint').textContent, 'This target accepts no commands.');
  const all = setup();
  // every command but signal_child, whose signal name the form does not ask for, and
  // reload_config, which the contract example's target does not advertise
  assert.deepEqual(all.$('cmd-command').options.map((o) => o.value),
    COMMANDS.filter((c) => c !== 'signal_child' && c !== 'reload_config'));
  assert.equal(all.$('manifest-field').hidden, true);
  choose(all.$('cmd-command'), 'add_child');
  assert.equal(all.$('manifest-field').hidden, false);
});

test('a command is built from the form, tracked and sent', () => {
  const { $, fill, session, store, toasts } = setup();
  fill('pause_child', '/root/invoice_writer', '  maintenance window ');
  $('cmd-send').click();
  assert.deepEqual(session.sent, [{
    type: 'command', command_id: '00000000-0000-4000-8000-000000000001', correlation_id: null, target_id: TARGET,
    command: 'pause_child', target: { child_path: '/root/invoice_writer' }, reason: 'maintenance window', confirmed: false,
  }]);
  assert.ok(store.pending.has('00000000-0000-4000-8000-000000000001'), 'its result can be matched');
  assert.deepEqual(toasts, [{ text: 'Sent Pause child (00000000)', level: 'info' }]);
});

test('a command without a reason or path is refused in the form', () => {
  const { doc, $, fill, session, store } = setup();
  fill('pause_child', '/root/invoice_writer', '');
  $('cmd-send').click();
  assert.equal($('cmd-hint').textContent, 'A reason is required.');
  assert.equal($('cmd-hint').classList.contains('bad'), true);
  assert.equal(doc.activeElement, $('cmd-reason'));
  $('cmd-path').value = '';
  $('cmd-reason').value = 'why';
  $('cmd-send').click();
  assert.equal($('cmd-hint').textContent, 'Select a node or type a child path.');
  assert.equal(doc.activeElement, $('cmd-path'));
  assert.deepEqual(session.sent, []);
  assert.equal(store.pending.size, 0);
});

test('a dangerous command waits for the confirmation dialog', () => {
  const { doc, $, fill, session } = setup();
  fill('remove_child', '/root/invoice_writer', 'no longer needed');
  $('cmd-send').click();
  const dialog = $('confirm-dialog');
  assert.equal(dialog.open, true);
  assert.equal($('confirm-command').textContent, 'Remove child (remove_child)');
  assert.equal($('confirm-target').textContent, `payments worker a (${TARGET})`);
  assert.equal($('confirm-path').textContent, '/root/invoice_writer');
  assert.equal($('confirm-reason').textContent, 'no longer needed');
  assert.equal(doc.activeElement, $('confirm-cancel'));
  $('confirm-cancel').click();
  assert.equal(dialog.open, false);
  assert.deepEqual(session.sent, []);
  assert.equal(doc.activeElement, $('cmd-send'));
  $('cmd-send').click();
  $('confirm-ok').click();
  assert.equal(session.sent.length, 1);
  assert.equal(session.sent[0].confirmed, true);
  assert.equal(session.sent[0].command, 'remove_child');
});

test('add_child derives the child id from the path and parses a JSON manifest', () => {
  const { $, fill, session } = setup();
  fill('add_child', '/root/extra', 'more capacity');
  $('cmd-manifest').value = '{"kind": "task", "factory": "demo:worker"}';
  $('cmd-send').click();
  $('confirm-ok').click();
  const [msg] = session.sent;
  assert.deepEqual(msg.target, { child_path: '/root/extra', child_manifest: { kind: 'task', factory: 'demo:worker' }, child_id: 'extra' });
});

test('without an established session nothing is sent or tracked', () => {
  const offline = setup({ session: fakeSession({ established: false }) });
  offline.fill('pause_child', '/root/invoice_writer', 'x');
  offline.$('cmd-send').click();
  assert.deepEqual(offline.session.sent, []);
  assert.deepEqual(offline.toasts, [{ text: 'Not connected to the relay; command not sent.', level: 'error' }]);
  const refused = setup({ session: fakeSession({ accepts: false }) });
  refused.fill('pause_child', '/root/invoice_writer', 'x');
  refused.$('cmd-send').click();
  assert.equal(refused.session.sent.length, 1, 'tried');
  assert.equal(refused.store.pending.size, 0, 'not waiting for a result that cannot come');
  assert.equal(refused.toasts[0].level, 'error');
  const none = setup({ session: null });
  none.fill('pause_child', '/root/invoice_writer', 'x');
  none.$('cmd-send').click();
  assert.equal(none.toasts[0].level, 'error');
});

test('a live stream never rebuilds the command choice; a new offer waits until the operator leaves it', () => {
  const { store, panel, $ } = setup({ commands: ['pause_child', 'resume_child'] });
  const select = $('cmd-command');
  choose(select, 'resume_child');
  const options = select.options;
  for (let i = 0; i < 3; i += 1) panel.renderOptions(); // frames with unrelated changes
  assert.deepEqual(select.options, options, 'the same option elements');
  assert.equal(select.value, 'resume_child');

  select.focus(); // the operator is in the control when the target's commands change
  store.apply({
    type: 'target_list',
    targets: [{ target_id: TARGET, display_name: 'payments worker a', connection_state: 'connected',
      supported_commands: ['pause_child', 'resume_child', 'restart_child'].map((name) => ({ name })) }],
  });
  panel.renderOptions();
  assert.deepEqual(select.options, options, 'untouched while in use');
  select.blur();
  assert.deepEqual(select.options.map((o) => o.value), ['restart_child', 'pause_child', 'resume_child']);
  assert.equal(select.value, 'resume_child', 'the choice is kept');
});

test('a validation hint stays until the operator acts, whatever the stream brings', () => {
  const { panel, $, fill } = setup({ commands: ['pause_child'] });
  fill('pause_child', '/root/invoice_writer', '');
  $('cmd-send').click();
  assert.equal($('cmd-hint').textContent, 'A reason is required.');
  panel.renderOptions();
  assert.equal($('cmd-hint').textContent, 'A reason is required.');
});

test('reload_config is first sent as a dry run; its diff is what the confirmation dialog lists', () => {
  const { $, fill, panel, session, store } = setup({ commands: ['pause_child', 'reload_config'], permitted: ['pause_child', 'reload_config'] });
  fill('reload_config', null, 'roll out the new worker');
  assert.equal($('cmd-path').disabled, true, 'reload_config acts on the whole tree');
  $('cmd-send').click();
  assert.equal($('confirm-dialog').open, false, 'the dialog waits for the diff');
  assert.equal(session.sent.length, 1);
  const [dry] = session.sent;
  assert.deepEqual(dry, {
    type: 'command', command_id: '00000000-0000-4000-8000-000000000002', correlation_id: null, target_id: TARGET,
    command: 'reload_config', target: { child_path: null }, reason: 'roll out the new worker', confirmed: false, dry_run: true,
  });
  assert.equal($('cmd-hint').textContent, 'Reading the target\'s config (dry run)…');
  const diff = {
    added: ['/root/fresh'], removed: ['/root/gone'],
    changed: [{ path: '/root/edit', keys: ['command', 'environment'], restart: true },
      { path: '/root/label', keys: ['policy.max_backoff_ms'], restart: false }],
    unchanged: 4, added_at_run_time: ['/root/extra'], removed_at_run_time: [], supervisors: [],
    not_applied: ['ipc.path'],
  };
  store.apply({ type: 'command_result', target_id: TARGET, result: {
    command_id: dry.command_id, correlation_id: dry.command_id, target_id: TARGET, accepted: true, status: 'completed',
    requested_by: 'CN=demo operator', error: null, state_delta: null, completed_at: '2026-12-02T01:00:00.000000Z', diff,
  } });
  for (const r of store.changes.results) panel.onResult(r);
  assert.equal($('confirm-dialog').open, true);
  assert.equal($('confirm-command').textContent, 'Reload config (reload_config)');
  assert.equal($('confirm-path').textContent, '—');
  assert.equal($('confirm-diff').hidden, false);
  const lines = $('confirm-diff').querySelectorAll('li').map((li) => li.textContent);
  assert.deepEqual(lines, [
    '+ /root/fresh added: starts',
    '− /root/gone removed: stops',
    '~ /root/edit command, environment: restarts',
    '~ /root/label policy.max_backoff_ms: applied without a restart',
    '= /root/extra added at run time, not in the file: kept',
    '! ipc.path read only at start: restart the target to apply',
    '4 unchanged',
  ]);
  $('confirm-ok').click();
  assert.equal(session.sent.length, 2);
  const real = session.sent[1];
  assert.equal(real.command, 'reload_config');
  assert.equal(real.confirmed, true);
  assert.equal(real.dry_run, undefined, 'the confirmed command is the real one');
  assert.notEqual(real.command_id, dry.command_id);
});

test('a reload whose dry run fails says why and opens no dialog', () => {
  const { $, fill, panel, session, store } = setup({ commands: ['reload_config'], permitted: ['reload_config'] });
  fill('reload_config', null, 'edit');
  $('cmd-send').click();
  const [dry] = session.sent;
  store.apply({ type: 'command_result', target_id: TARGET, result: {
    command_id: dry.command_id, correlation_id: dry.command_id, target_id: TARGET, accepted: false, status: 'failed',
    requested_by: 'CN=demo operator', completed_at: '2026-12-02T01:00:00.000000Z', state_delta: null,
    error: { code: 'invalid_config', stage: 'command_execute', target_id: TARGET, message: 'nothing was changed: children[2].kind: must be one of task', retryable: false },
  } });
  for (const r of store.changes.results) panel.onResult(r);
  assert.equal($('confirm-dialog').open, false);
  assert.equal($('cmd-hint').textContent, 'The config cannot be reloaded: invalid_config: nothing was changed: children[2].kind: must be one of task');
  assert.equal($('cmd-hint').classList.contains('bad'), true);
  assert.equal(session.sent.length, 1, 'nothing more was sent');
});
