import { Module } from '@nestjs/common';

import { JobsModule } from '../jobs/jobs.module.js';
import { EventsController } from './events.controller.js';
import { EventsService } from './events.service.js';

@Module({ imports: [JobsModule], controllers: [EventsController], providers: [EventsService] })
export class EventsModule {}
