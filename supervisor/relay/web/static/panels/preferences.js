// Language and theme: the header's selector and toggle, <html lang> and data-theme, the page
// title and the translated static texts. Choices are kept in `prefs` (storage.js).

import { elements } from '../dom.js';
import { language, setLanguage, t, translateDom } from '../i18n.js';

export class PreferencesPanel {
  // doc: the page's document; onLanguage(): re-render what the panels draw themselves.
  constructor(doc, { prefs, onLanguage }) {
    this.doc = doc;
    this.prefs = prefs;
    this.onLanguage = onLanguage;
    this.el = elements(doc, ['lang-select', 'theme-toggle']);
    this.el.langSelect.addEventListener('change', (ev) => this.applyLanguage(ev.target.value));
    this.el.themeToggle.addEventListener('click', () => this.applyTheme(this.theme === 'dark' ? 'light' : 'dark'));
  }

  get theme() {
    return this.doc.documentElement.dataset.theme;
  }

  // The stored theme, else the system's preference.
  initTheme(prefersDark) {
    this.doc.documentElement.dataset.theme = this.prefs.get('theme') || (prefersDark ? 'dark' : 'light');
  }

  applyLanguage(lang) {
    setLanguage(lang);
    this.prefs.set('lang', language());
    this.doc.documentElement.lang = language() === 'zh' ? 'zh-CN' : 'en';
    this.el.langSelect.value = language();
    translateDom(this.doc);
    this.doc.title = `${t('title')} · dashboard`;
    this.onLanguage();
  }

  applyTheme(theme) {
    const dark = theme === 'dark';
    this.doc.documentElement.dataset.theme = dark ? 'dark' : 'light';
    this.prefs.set('theme', dark ? 'dark' : 'light');
    const button = this.el.themeToggle;
    button.setAttribute('aria-pressed', String(dark));
    button.textContent = dark ? t('theme_dark') : t('theme_light');
  }

  render() {
    this.applyTheme(this.theme);
  }
}
