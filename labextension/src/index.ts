/**
 * remote-kernels for JupyterLab 4 / Notebook 7.
 *
 * - a status bar item: the current notebook's kernel job (queued with the scheduler's reason and
 *   estimated start, starting on NODE, running on NODE with the time left);
 * - a side panel of the user's remote kernels (this server's and any other's, orphans too) with
 *   shut-down and cancel buttons;
 * - a warning notification once a kernel of this server has its spec's walltime_warning seconds
 *   left (the server says so: KernelView.warn), once per job;
 * - the launch dialog (launch.ts): a Resources… toolbar button on notebooks whose spec lets users
 *   choose resources.
 *
 * Everything comes from the server extension's REST API under /remote-kernels/ (remote_kernels/serverext).
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { listIcon } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { KernelView, listKernels, act } from './api';
import { chooseResources, declaresChoices, ResourcesButton, specOf } from './launch';

const STATUS_POLL_MS = 2000;
const PANEL_POLL_MS = 5000;

/** The view of the notebook's kernel: by kernel id, or, while the server is still starting it
 * (the default server mode returns the kernel id only once the job runs), the newest of this
 * server's starts of the notebook's kernelspec. */
function viewOf(panel: NotebookPanel, kernels: KernelView[]): KernelView | null {
  const ctx = panel.sessionContext;
  const kid = ctx.session?.kernel?.id;
  if (kid) {
    return kernels.find(k => k.kernel_id === kid) ?? null;
  }
  const name = ctx.session?.kernel?.name ?? ctx.kernelPreference.name;
  const starting = kernels.filter(k => k.server === 'this' && !k.known && k.spec === name);
  starting.sort((a, b) => (a.started ?? 0) - (b.started ?? 0));
  return starting.length ? starting[starting.length - 1] : null;
}

/** Warn, once per job, about this server's kernels whose wall-time is near. */
class WalltimeWarnings {
  check(_: KernelPoller, kernels: KernelView[]): void {
    for (const k of kernels) {
      if (k.server === 'this' && k.warn && k.job_id && !this._warned.has(k.job_id)) {
        this._warned.add(k.job_id);
        const notebook = k.notebook ? ` (${k.notebook})` : '';
        Notification.warning(
          `Remote kernel ${k.spec}${notebook}: ${k.scheduler} job ${k.job_id} reaches its wall-time in ` +
            `${k.time_left}. Save your work: the kernel ends with the job.`,
          { autoClose: false }
        );
        // The same warning in the notebook, through the scheduler (a batch job's launcher passes
        // on the first pre-end signal it gets; refused for others, which is fine).
        void act(k.kernel_id, 'warn').catch(() => undefined);
      }
    }
  }

  private _warned = new Set<string>();
}

/** The server's list of remote kernels, fetched every STATUS_POLL_MS; `changed` carries it. */
class KernelPoller {
  readonly changed = new Signal<KernelPoller, KernelView[]>(this);

  constructor() {
    window.setInterval(() => void this.poll(), STATUS_POLL_MS);
    void this.poll();
  }

  async poll(): Promise<void> {
    try {
      this.kernels = await listKernels();
    } catch (e) {
      this.kernels = [];
    }
    this.changed.emit(this.kernels);
  }

  kernels: KernelView[] = [];
}

/** One line about a notebook's job (its view's summary); hidden when the kernel is no remote one. */
class JobLabel extends Widget {
  constructor(cls: string) {
    super();
    this.addClass(cls);
    this.node.dataset.phase = '';
    this.hide();
  }

  set(view: KernelView | null): void {
    if (!view) {
      this.hide();
      return;
    }
    this.node.textContent = view.summary;
    this.node.title = `remote kernel ${view.spec}: ${view.summary}`;
    this.node.dataset.phase = view.phase;
    this.node.dataset.job = view.job_id ?? '';
    this.show();
  }
}

/** The status bar item: the current notebook's job. */
function statusItem(tracker: INotebookTracker, poller: KernelPoller): JobLabel {
  const item = new JobLabel('rk-StatusItem');
  const update = () => {
    const panel = tracker.currentWidget;
    item.set(panel ? viewOf(panel, poller.kernels) : null);
  };
  poller.changed.connect(update);
  tracker.currentChanged.connect(update);
  return item;
}

/** Where there is no status bar (Notebook 7): the same line in each notebook's toolbar. */
class ToolbarJobs implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(private poller: KernelPoller) {}

  createNew(panel: NotebookPanel): IDisposable {
    const label = new JobLabel('rk-ToolbarJob');
    const update = () => label.set(viewOf(panel, this.poller.kernels));
    this.poller.changed.connect(update);
    panel.toolbar.insertAfter('spacer', 'remote-kernels-job', label);
    update();
    return new DisposableDelegate(() => {
      this.poller.changed.disconnect(update);
      label.dispose();
    });
  }
}

function cell(text: string): HTMLTableCellElement {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

/** The panel of the user's remote kernels, refreshed every PANEL_POLL_MS while shown. */
class KernelsPanel extends Widget {
  constructor() {
    super();
    this.id = 'rk-kernels-panel';
    this.addClass('rk-Panel');
    this.title.caption = 'Remote kernels';
    this.title.icon = listIcon;
    this.title.label = 'Remote kernels';
    this.node.innerHTML =
      '<h2>Remote kernels</h2><button class="rk-refresh">Refresh</button>' +
      '<table><thead><tr><th>spec</th><th>job</th><th>node</th><th>state</th><th>time left</th>' +
      '<th>server</th><th>notebook</th><th></th></tr></thead><tbody></tbody></table>' +
      '<div class="rk-message"></div>';
    this.node.querySelector('.rk-refresh')!.addEventListener('click', () => void this.refresh());
    this._timer = window.setInterval(() => {
      if (this.isVisible) {
        void this.refresh();
      }
    }, PANEL_POLL_MS);
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  private say(text: string): void {
    this.node.querySelector('.rk-message')!.textContent = text;
  }

  async refresh(): Promise<void> {
    let kernels: KernelView[];
    try {
      kernels = await listKernels();
    } catch (e) {
      this.say(`cannot list remote kernels: ${e}`);
      return;
    }
    const body = this.node.querySelector('tbody')!;
    body.replaceChildren(...kernels.map(k => this.row(k)));
    if (!kernels.length) {
      this.say('No remote kernels.');
    }
  }

  private row(k: KernelView): HTMLTableRowElement {
    const tr = document.createElement('tr');
    tr.className = 'rk-KernelRow';
    tr.dataset.job = k.job_id ?? '';
    tr.dataset.kernel = k.kernel_id;
    tr.dataset.phase = k.phase;
    const state = k.phase + (k.reason ? ` (${k.reason})` : '');
    const server = k.server === 'this' ? 'this server' : `server ${k.server} (pid ${k.owner_pid})`;
    tr.append(cell(k.spec), cell(k.job_id ?? '-'), cell(k.node ?? '-'), cell(state), cell(k.time_left || '-'),
      cell(server), cell(k.notebook ?? (k.known ? 'no notebook' : '-')));
    const buttons = document.createElement('td');
    if (k.known) {
      buttons.append(this.button('Shut down', 'rk-shutdown', k.kernel_id, 'shutdown'));
    }
    buttons.append(this.button('Cancel job', 'rk-cancel', k.kernel_id || k.session_id, 'cancel'));
    tr.append(buttons);
    return tr;
  }

  private button(label: string, cls: string, ident: string, action: 'cancel' | 'shutdown'): HTMLButtonElement {
    const b = document.createElement('button');
    b.textContent = label;
    b.className = cls;
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        this.say(await act(ident, action));
      } catch (e) {
        this.say(`${label} failed: ${e}`);
      }
      await this.refresh();
    });
    return b;
  }

  private _timer: number;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'remote-kernels-jupyterlab:plugin',
  description: 'The remote kernel\'s batch job in the status bar and a panel of your remote kernels.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, statusBar: IStatusBar | null,
    palette: ICommandPalette | null) => {
    const poller = new KernelPoller();
    const warnings = new WalltimeWarnings();
    poller.changed.connect(warnings.check, warnings);
    if (statusBar) {
      const item = statusItem(tracker, poller);
      statusBar.registerStatusItem('remote-kernels:job', {
        item,
        align: 'left',
        rank: 4,
        isActive: () => item.isVisible
      });
    } else {
      app.docRegistry.addWidgetExtension('Notebook', new ToolbarJobs(poller));
    }
    const panel = new KernelsPanel();
    const command = 'remote-kernels:open-panel';
    app.commands.addCommand(command, {
      label: 'Remote Kernels: Show Panel',
      execute: () => {
        if (!panel.isAttached) {
          app.shell.add(panel, 'left', { rank: 900 });
        }
        app.shell.activateById(panel.id);
      }
    });
    app.shell.add(panel, 'left', { rank: 900 });
    palette?.addItem({ command, category: 'Remote Kernels' });

    const specs = app.serviceManager.kernelspecs;
    app.docRegistry.addWidgetExtension('Notebook', new ResourcesButton(specs));
    const choose = 'remote-kernels:choose-resources';
    app.commands.addCommand(choose, {
      label: 'Remote Kernels: Choose Resources…',
      isEnabled: () => !!tracker.currentWidget && declaresChoices(specs, specOf(tracker.currentWidget)),
      execute: () => (tracker.currentWidget ? chooseResources(tracker.currentWidget) : undefined)
    });
    palette?.addItem({ command: choose, category: 'Remote Kernels' });
  }
};

export default plugin;
