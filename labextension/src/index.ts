import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { oscarIcon } from './icon';
import { LogPanels } from './logview';
import { showJobCell } from './navigate';
import { installOutputCancel } from './outputcancel';
import { askAboutSessionsLeft } from './sessionsleft';
import { DEFAULT_REFRESH_SECONDS, OscarSidebar } from './sidebar';

/** The settings schema (schema/plugin.json) belongs to this id. */
const PLUGIN_ID = 'oscar-jupyter:plugin';
const OPEN_COMMAND = 'oscar-jupyter:open-sidebar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'OSCAR virtual nodes and offloaded jobs in the left sidebar.',
  autoStart: true,
  optional: [
    ILayoutRestorer,
    ICommandPalette,
    ISettingRegistry,
    INotebookTracker,
    IDocumentManager
  ],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    notebooks: INotebookTracker | null,
    docManager: IDocumentManager | null
  ) => {
    const contents = app.serviceManager.contents;
    const logs = new LogPanels(widget => {
      if (!widget.isAttached) {
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
    });
    const sidebar = new OscarSidebar({
      notebookPath: () => {
        const path = notebooks?.currentWidget?.context.path;
        return path ? contents.localPath(path) : null;
      },
      openCell: async job => {
        if (!docManager) {
          throw new Error(
            'JupyterLab has no document manager to open notebooks with.'
          );
        }
        await showJobCell(docManager, job);
      },
      openLog: (job, cluster) => logs.open(job, cluster),
      listed: (cluster, jobs) => logs.listed(cluster, jobs)
    });
    sidebar.id = 'oscar-jupyter-sidebar';
    sidebar.title.icon = oscarIcon;
    app.shell.add(sidebar, 'left', { rank: 700 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }
    notebooks?.currentChanged.connect(() => sidebar.notebookChanged());
    // A cell that ran may have been `%oscar_connect`: the sidebar follows the notebook's
    // connection once its kernel is idle again.
    notebooks?.widgetAdded.connect((_, panel) => {
      const context = panel.sessionContext;
      context.statusChanged.connect((_, status) => {
        if (status === 'idle' && notebooks.currentWidget === panel) {
          sidebar.kernelIdle();
        }
      });
      // A kernel that stops or restarts leaves its persistent sessions holding their
      // allocations: ask whether to keep them.
      const ask = (kernelId: string, end: 'stopped' | 'restarted') =>
        void askAboutSessionsLeft(
          contents.localPath(panel.context.path),
          kernelId,
          end,
          () => void sidebar.refresh()
        );
      context.statusChanged.connect((_, status) => {
        const kernel = context.session?.kernel;
        if (status === 'restarting' && kernel) {
          ask(kernel.id, 'restarted');
        }
      });
      context.kernelChanged.connect((_, change) => {
        if (change.oldValue && change.newValue?.id !== change.oldValue.id) {
          ask(change.oldValue.id, 'stopped');
        }
      });
    });
    // Cancel buttons in cell outputs (a --no-wait job's view) act through the server at once,
    // even while the kernel is busy.
    installOutputCancel();
    notebooks?.activeCellChanged.connect((_, cell) =>
      sidebar.cellChanged(cell?.model.id ?? null)
    );

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = () => {
            const interval = settings.get('refreshInterval').composite;
            const cluster = settings.get('defaultCluster').composite;
            sidebar.setRefreshInterval(
              typeof interval === 'number' ? interval : DEFAULT_REFRESH_SECONDS
            );
            sidebar.setDefaultCluster(
              typeof cluster === 'string' ? cluster.trim() : ''
            );
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error(
            `oscar-jupyter: cannot load the settings of ${PLUGIN_ID}`,
            reason
          );
        });
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
