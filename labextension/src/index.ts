import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';

import { oscarIcon } from './icon';
import { OscarSidebar } from './sidebar';

const PLUGIN_ID = 'oscar-jupyter:sidebar';
const OPEN_COMMAND = 'oscar-jupyter:open-sidebar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'OSCAR virtual nodes and offloaded jobs in the left sidebar.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const sidebar = new OscarSidebar();
    sidebar.id = 'oscar-jupyter-sidebar';
    sidebar.title.icon = oscarIcon;
    app.shell.add(sidebar, 'left', { rank: 700 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Show OSCAR Jobs',
      execute: () => app.shell.activateById(sidebar.id)
    });
    if (palette) {
      palette.addItem({ command: OPEN_COMMAND, category: 'OSCAR' });
    }
  }
};

export default plugin;
