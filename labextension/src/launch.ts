/**
 * The launch dialog: resources a user chooses for a notebook's kernel, within the bounds its
 * spec's admin declares (option user_choices).
 *
 * The server checks the choice (POST /remote-kernels/specs/SPEC/choices) before it is stored in
 * the notebook's metadata (metadata.remote_kernels.resources.SPEC); the notebook is saved and
 * gets a new kernel, whose provisioner reads the choice from the saved notebook and checks it
 * again (remote_kernels/chosen.py), as at every later start of that notebook's kernel.
 */
import { Dialog, Notification, showDialog, ToolbarButton } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { KernelSpec } from '@jupyterlab/services';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { checkChoice, Resources, SpecChoices, specChoices } from './api';

export const METADATA_KEY = 'remote_kernels';
const FIELDS: { [field: string]: string } = {
  partition: 'Partition',
  time: 'Wall-time',
  cpus: 'CPUs',
  mem: 'Memory',
  gpus: 'GPUs'
};
const NUMBERS = new Set(['cpus', 'gpus']);

/** The notebook's kernelspec name (of its kernel, or the one it will start). */
export function specOf(panel: NotebookPanel): string {
  const ctx = panel.sessionContext;
  return ctx.session?.kernel?.name ?? ctx.kernelPreference.name ?? '';
}

/** Whether the kernelspec declares choices (its kernel.json, as the server lists it). */
export function declaresChoices(specs: KernelSpec.IManager, name: string): boolean {
  const spec = specs.specs?.kernelspecs[name];
  const prov = (spec?.metadata as any)?.kernel_provisioner;
  const choices = prov?.config?.user_choices;
  return !!choices && Object.keys(choices).length > 0;
}

/** The choice the notebook keeps for a spec. */
function stored(model: INotebookModel, spec: string): Resources {
  const meta = (model.getMetadata(METADATA_KEY) as any) ?? {};
  return (meta.resources ?? {})[spec] ?? {};
}

/** The form: one input per declared field, its bounds beside it, and the server's refusal. */
class ChoiceForm extends Widget {
  constructor(info: SpecChoices, values: Resources, error: string) {
    super();
    this.addClass('rk-ChoiceForm');
    const note = document.createElement('p');
    note.className = 'rk-ChoiceNote';
    note.textContent =
      'Saves the notebook and starts a new kernel in a new job with these resources; the current kernel ' +
      '(and its variables) ends with its job. Empty: the spec\'s own value.';
    this.node.append(note);
    for (const field of Object.keys(FIELDS)) {
      const bounds = info.choices[field];
      if (!bounds) {
        continue;
      }
      const row = document.createElement('label');
      row.className = 'rk-ChoiceRow';
      const name = document.createElement('span');
      name.textContent = FIELDS[field];
      const value = String(values[field] ?? info.defaults[field] ?? '');
      let input: HTMLInputElement | HTMLSelectElement;
      let hint: string;
      if (bounds.choices) {
        const select = document.createElement('select');
        // Empty: the spec's own partition (or the scheduler's default), left out of the choice.
        const own = info.defaults[field] ? `${info.defaults[field]} (the spec's)` : 'scheduler default';
        select.append(new Option(own, '', false, !(field in values)));
        for (const choice of bounds.choices) {
          select.append(new Option(choice, choice, false, field in values && choice === value));
        }
        input = select;
        hint = bounds.choices.join(', ');
      } else {
        const text = document.createElement('input');
        text.type = NUMBERS.has(field) ? 'number' : 'text';
        text.value = value === '0' && NUMBERS.has(field) && !(field in values) ? '' : value;
        text.placeholder = `${bounds.min} to ${bounds.max}`;
        input = text;
        hint = `${bounds.min} to ${bounds.max}`;
      }
      input.name = field;
      const range = document.createElement('span');
      range.className = 'rk-ChoiceBounds';
      range.textContent = hint;
      row.append(name, input, range);
      this.node.append(row);
      this._inputs[field] = input;
    }
    const message = document.createElement('div');
    message.className = 'rk-ChoiceError';
    message.textContent = error;
    this.node.append(message);
  }

  /** field -> the value entered (numbers for counts; empty fields left out: the spec's own value). */
  getValue(): Resources {
    const out: Resources = {};
    for (const [field, input] of Object.entries(this._inputs)) {
      const text = input.value.trim();
      if (text) {
        out[field] = NUMBERS.has(field) && /^\d+$/.test(text) ? Number(text) : text;
      }
    }
    return out;
  }

  private _inputs: { [field: string]: HTMLInputElement | HTMLSelectElement } = {};
}

/** Ask for the resources of the notebook's next kernel; on an accepted choice, store it, save
 * the notebook and start a new kernel (a new job) with it.  A refused choice shows the
 * server's message and asks again. */
export async function chooseResources(panel: NotebookPanel): Promise<void> {
  const spec = specOf(panel);
  let info: SpecChoices;
  try {
    info = await specChoices(spec);
  } catch (e) {
    Notification.error(`Remote kernels: cannot read the choices of ${spec}: ${(e as Error).message}`);
    return;
  }
  if (!Object.keys(info.choices).length) {
    Notification.info(`Remote kernels: kernelspec ${spec} lets you choose no resources.`);
    return;
  }
  const model = panel.context.model;
  let values = stored(model, spec);
  let error = '';
  for (;;) {
    const result = await showDialog({
      title: `Resources for ${spec}`,
      body: new ChoiceForm(info, values, error),
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start kernel' })],
      focusNodeSelector: 'input, select'
    });
    if (!result.button.accept || !result.value) {
      return;
    }
    values = result.value;
    try {
      const checked = await checkChoice(spec, values);
      const meta = (model.getMetadata(METADATA_KEY) as any) ?? {};
      model.setMetadata(METADATA_KEY, { ...meta, resources: { ...(meta.resources ?? {}), [spec]: checked } });
      break;
    } catch (e) {
      error = (e as Error).message;
    }
  }
  await panel.context.save();
  await panel.sessionContext.changeKernel({ name: spec });
}

/** The toolbar's Resources… button, shown while the notebook's spec declares choices. */
export class ResourcesButton implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(private specs: KernelSpec.IManager) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      className: 'rk-ResourcesButton',
      label: 'Resources…',
      tooltip: 'Choose the resources of this notebook\'s remote kernel (a new job)',
      onClick: () => void chooseResources(panel)
    });
    const update = () => button.setHidden(!declaresChoices(this.specs, specOf(panel)));
    panel.toolbar.insertAfter('kernelName', 'remote-kernels-resources', button);
    panel.sessionContext.kernelChanged.connect(update);
    this.specs.specsChanged.connect(update);
    void panel.sessionContext.ready.then(update);
    update();
    return new DisposableDelegate(() => {
      panel.sessionContext.kernelChanged.disconnect(update);
      this.specs.specsChanged.disconnect(update);
      button.dispose();
    });
  }
}
