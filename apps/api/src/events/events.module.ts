import { Module } from '@nestjs/common';

import { JobsModule } from '../jobs/jobs.module.js';
import { EventsController } from './events.controller.js';
import { EventsService } from './events.service.js';
import { JobChangesController } from './job-changes.controller.js';

@Module({ imports: [JobsModule], controllers: [EventsController, JobChangesController], providers: [EventsService] })
export class EventsModule {}
