// Control form: the commands the selected target supports, validation, the confirmation
// dialog for dangerous commands, and sending. A command with a dry run (reload_config) is
// first sent as one; its result's diff is what the confirmation dialog shows.

import { elements, h, offerOptions } from '../dom.js';
import { language, t } from '../i18n.js';
import { CommandInputError, TREE_COMMANDS, buildCommand, hasDryRun, isDangerous, parseManifest } from '../protocol.js';
import { COMMANDS } from '../vocabulary.js';

// signal_child needs a signal name this form does not ask for (`ctl signal` sends it).
const FORM_COMMANDS = COMMANDS.filter((c) => c !== 'signal_child');

// Form hint for each CommandInputError code the form can cause.
const ERROR_HINTS = { empty_reason: 'cmd_need_reason', target_not_bound: 'cmd_no_target', invalid_message_schema: 'cmd_need_path' };

export class ControlPanel {
  // session() gives the relay session ({established, send(msg) -> bool}) or null;
  // notify(text, level) shows a toast; newId() makes a command id.
  constructor(root, { store, selection, session, notify, newId }) {
    this.store = store;
    this.selection = selection;
    this.session = session;
    this.notify = notify;
    this.newId = newId;
    this.el = elements(root, [
      'command-form', 'cmd-command', 'cmd-path', 'manifest-field', 'cmd-manifest', 'cmd-reason', 'cmd-hint',
      'cmd-send', 'confirm-dialog', 'confirm-command', 'confirm-target', 'confirm-path', 'confirm-reason',
      'confirm-cancel', 'confirm-ok', 'confirm-diff', 'confirm-diff-label',
    ]);
    // the dry run whose result opens the dialog: {dryRunId, preview}
    this.awaiting = null;
    this.el.cmdCommand.addEventListener('change', () => this.updateHint());
    this.el.commandForm.addEventListener('submit', (ev) => this._onSubmit(ev));
  }

  // Offers the commands the selected target supports and the session is granted
  // (server_hello's permitted_commands), keeping the current choice if offered (see
  // offerOptions: nothing changes while the operator is in the control).
  renderOptions() {
    const select = this.el.cmdCommand;
    const tg = this.store.targets.get(this.selection.targetId);
    const supported = tg ? this._offered(tg) : [];
    const key = `${language()}|${tg ? tg.targetId : ''}|${supported.join(' ')}`;
    offerOptions(select, key, () => supported.map((c) => h('option', { value: c },
      isDangerous(c) ? t('cmd_dangerous', { name: t(`cmd_${c}`) }) : t(`cmd_${c}`))), () => {
      select.disabled = supported.length === 0;
      this.updateHint();
    });
  }

  // The commands of `tg` this session may send, in the contract's order.
  _offered(tg) {
    const permitted = this.store.session.permittedCommands;
    return FORM_COMMANDS.filter((c) => tg.supportedCommands.includes(c) && (!permitted || permitted.includes(c)));
  }

  // A node picked in the tree becomes the command's child path.
  setPath(path) {
    if (path) this.el.cmdPath.value = path;
  }

  updateHint() {
    const { el } = this;
    const command = el.cmdCommand.value;
    const tg = this.store.targets.get(this.selection.targetId);
    el.manifestField.hidden = command !== 'add_child';
    el.cmdPath.disabled = TREE_COMMANDS.has(command);
    let hint = '';
    if (!tg) hint = t('cmd_no_target');
    else if (!tg.supportedCommands.length) hint = t('cmd_none_supported');
    else if (!this._offered(tg).length) hint = t('cmd_none_permitted');
    else if (isDangerous(command)) hint = t('cmd_danger_hint');
    el.cmdHint.textContent = hint;
  }

  // Validates the form; returns a command message or null after showing why.
  _commandFromForm(confirmed, dryRun = false) {
    const { el } = this;
    const command = el.cmdCommand.value;
    const childPath = TREE_COMMANDS.has(command) ? null : (el.cmdPath.value.trim() || null);
    const manifest = command === 'add_child' ? parseManifest(el.cmdManifest.value) : undefined;
    try {
      const msg = buildCommand({
        commandId: this.newId(), targetId: this.selection.targetId, command, childPath, childManifest: manifest,
        reason: el.cmdReason.value, confirmed, dryRun,
      });
      if (command === 'add_child' && childPath) msg.target.child_id = childPath.slice(childPath.lastIndexOf('/') + 1);
      return msg;
    } catch (err) {
      if (!(err instanceof CommandInputError)) throw err;
      const key = ERROR_HINTS[err.code];
      el.cmdHint.textContent = key ? t(key) : err.message;
      el.cmdHint.classList.add('bad');
      (err.code === 'empty_reason' ? el.cmdReason : el.cmdPath).focus();
      return null;
    }
  }

  _send(msg) {
    const session = this.session();
    if (!session || !session.established) {
      this.notify(t('cmd_not_connected'), 'error');
      return;
    }
    this.store.trackCommand(msg);
    if (!session.send(msg)) {
      this.store.pending.delete(msg.command_id);
      this.notify(t('cmd_not_connected'), 'error');
      return;
    }
    this.notify(t('cmd_sent', { command: t(`cmd_${msg.command}`), id: msg.command_id.slice(0, 8) }), 'info');
  }

  _onSubmit(ev) {
    ev.preventDefault();
    const { el } = this;
    el.cmdHint.classList.remove('bad');
    const command = el.cmdCommand.value;
    if (!isDangerous(command)) {
      const msg = this._commandFromForm(false);
      if (msg) this._send(msg);
      return;
    }
    const preview = this._commandFromForm(true); // validates before asking
    if (!preview) return;
    if (hasDryRun(command)) {
      const dry = this._commandFromForm(false, true);
      this.awaiting = { dryRunId: dry.command_id, preview };
      el.cmdHint.textContent = t('cmd_dry_run_reading');
      this._send(dry);
      return;
    }
    this._confirm(preview, null);
  }

  // A command result or refusal reached the store (app.js hands each one over): the result
  // of the dry run we wait for opens the dialog with its diff, a failure says why instead.
  onResult(r) {
    const sent = r.sent;
    if (!this.awaiting || !sent || sent.command_id !== this.awaiting.dryRunId) return;
    const { preview } = this.awaiting;
    this.awaiting = null;
    const error = r.kind === 'result' ? r.result.error : r.error;
    if (error || r.kind !== 'result' || r.result.status !== 'completed') {
      this.el.cmdHint.textContent = t('cmd_dry_run_failed', { code: error ? error.code : r.result.status, message: error ? error.message : '' });
      this.el.cmdHint.classList.add('bad');
      return;
    }
    this.el.cmdHint.textContent = '';
    this._confirm(preview, r.result.diff || null);
  }

  // The confirmation dialog for ``preview``; ``diff`` (a reload's) is listed when given.
  _confirm(preview, diff) {
    const { el } = this;
    const command = preview.command;
    const dialog = el.confirmDialog;
    el.confirmCommand.textContent = `${t(`cmd_${command}`)} (${command})`;
    const tg = this.store.targets.get(preview.target_id);
    el.confirmTarget.textContent = tg ? `${tg.displayName} (${tg.targetId})` : preview.target_id;
    el.confirmPath.textContent = preview.target.child_path || t('d_none');
    el.confirmReason.textContent = preview.reason;
    el.confirmDiff.hidden = el.confirmDiffLabel.hidden = !diff;
    el.confirmDiff.replaceChildren(...(diff ? diffLines(diff) : []));
    dialog.returnValue = '';
    dialog.onclose = () => {
      if (dialog.returnValue === 'confirm') this._send(preview);
      el.cmdSend.focus();
    };
    dialog.showModal();
    el.confirmCancel.focus();
  }
}

// A reload diff as list items: added, removed, changed (with their keys), what is kept from
// run time, what needs a target restart, and the unchanged count.
export function diffLines(diff) {
  const items = [];
  const line = (sign, path, text, cls) => items.push(h('li', { class: `diff-${cls}` },
    h('code', {}, `${sign} ${path}`), ` ${text}`));
  for (const p of diff.added || []) line('+', p, t('diff_added'), 'added');
  for (const p of diff.removed || []) line('−', p, t('diff_removed'), 'removed');
  for (const c of diff.changed || []) {
    line('~', c.path, t(c.restart ? 'diff_restart' : 'diff_live', { keys: c.keys.join(', ') }), 'changed');
  }
  for (const s of diff.supervisors || []) line('~', s.path, t('diff_live', { keys: s.keys.join(', ') }), 'changed');
  for (const p of diff.added_at_run_time || []) line('=', p, t('diff_kept_added'), 'kept');
  for (const p of diff.removed_at_run_time || []) line('=', p, t('diff_kept_removed'), 'kept');
  for (const k of diff.not_applied || []) line('!', k, t('diff_not_applied'), 'not-applied');
  const nothing = !(diff.added || []).length && !(diff.removed || []).length
    && !(diff.changed || []).length && !(diff.supervisors || []).length;
  items.push(h('li', { class: 'diff-unchanged' }, nothing ? t('diff_nothing', { n: diff.unchanged ?? 0 })
    : t('diff_unchanged', { n: diff.unchanged ?? 0 })));
  return [h('ul', { class: 'diff-list' }, ...items)];
}